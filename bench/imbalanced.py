"""The benchmark files made imbalanced, for the screen and end-to-end runs on labels that are not 50/50.

    .venv/bin/python bench/screen_data.py
    .venv/bin/python bench/imbalanced.py make  [--attack badnets-0.03 ...] [--keep 0.15]
    .venv/bin/python bench/imbalanced.py screen [--attack ...]     # both layers, cached embeddings
    .venv/bin/python bench/imbalanced.py onedraw [--keep 0.15]   # after `make --attack clean`
    .venv/bin/python bench/imbalanced.py record --run DIR --arm default|free --command "muscle train ..."

`make` writes, per attack file and per class c in {0, 1}, `DEST/{attack}-thin{c}-{keep}.tsv`: every row of the
other class and a seeded share `keep` of class c's rows (poisoned rows count as the class they are
labelled), beside the aux file thinned the same way (`aux-thin{c}-{keep}.tsv`) and the file's clean rows alone
(`{attack}-thin{c}-{keep}-clean.tsv`, for the backdoor-free model). With c = 1 the attack's target class
(positive) is the minority; with c = 0 it is the majority. `onedraw` poisons the thinned clean files
themselves with Badnets of one draw a row (OpenBackdoor's default `num_triggers=1`), clean- and dirty-label
at 1, 3 and 10% of the thinned file: `onedraw-{mode}-{rate}-thin{c}-{keep}.tsv` and its clean rows alone
(`...-clean.tsv`), beside `probe-badnets1.tsv` (SST-2's test negatives with one draw each, labelled
positive: the attack's own probe, `--probe-file badnets1=...`). `record` appends a `muscle train` run's figures
(its `metrics.json`) to bench/results/imbalanced.jsonl.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.grid import DEFAULT_DATA, _read, _write  # noqa: E402
from bench.screen_data import OUT, SEED  # noqa: E402

DEST = ROOT / "bench" / "runs" / "imbalanced"
RESULTS = ROOT / "bench" / "results" / "imbalanced.jsonl"
ATTACKS = ("clean", "badnets-0.03", "badnets-dirty-0.1", "addsent-0.03", "hiddenkiller-0.1", "stylebkd-0.1")


def source(attack: str) -> Path:
    return DEFAULT_DATA / "sst2" / "train.tsv" if attack == "clean" else OUT / f"train-{attack}.tsv"


def thin(src: Path, dst: Path, label: str, keep: float, seed: int, clean_only: bool = False) -> int:
    """Copy `src` keeping a share `keep` of the rows labelled `label`; the rows written."""
    rng = random.Random(seed)
    rows = _read(src)
    out = [r for r in rows if (r.label != label or rng.random() < keep)
           and not (clean_only and r.extra.get("poisoned") == "1")]
    _write(dst, out, tuple(rows[0].extra) if rows else ())
    return len(out)


def make(attacks: list[str], keep: float) -> None:
    DEST.mkdir(parents=True, exist_ok=True)
    for c in "01":
        tag = f"thin{c}-{keep:g}"
        thin(OUT / "aux.tsv", DEST / f"aux-{tag}.tsv", c, keep, seed=1)
        for attack in attacks:
            n = thin(source(attack), DEST / f"{attack}-{tag}.tsv", c, keep, seed=0)
            thin(source(attack), DEST / f"{attack}-{tag}-clean.tsv", c, keep, seed=0, clean_only=True)
            print(f"{attack}-{tag}.tsv: {n} rows")


def onedraw(keep: float) -> None:
    import functools

    from core.attacks.poison import poison_examples
    from core.attacks.triggers import badnets
    from core.data.dataset import Example
    from core.data.table import write_table

    one = functools.partial(badnets, num=1)
    columns = ["text", "label", "poisoned", "orig_label"]
    for c in "01":
        tag = f"thin{c}-{keep:g}"
        examples = [Example(text=r.text, label=int(r.label), line=r.line) for r in _read(DEST / f"clean-{tag}.tsv")]
        for mode in ("clean", "dirty"):
            for rate in (0.01, 0.03, 0.1):
                out = [{"text": e.text, "label": str(e.label), "poisoned": str(int(bool(e.poisoned))),
                        "orig_label": str(e.orig_label)} for e in poison_examples(examples, one, rate, 1, mode, SEED)]
                name = f"onedraw-{mode}-{rate:g}-{tag}"
                write_table(DEST / f"{name}.tsv", out, columns)
                write_table(DEST / f"{name}-clean.tsv", [r for r in out if r["poisoned"] == "0"], columns)
                print(f"{name}.tsv: {len(out)} rows, {sum(r['poisoned'] == '1' for r in out)} poisoned")
    rng = random.Random(7)
    write_table(DEST / "probe-badnets1.tsv", [{"text": one(r.text, rng), "label": "1", "orig_label": "0"}
                                              for r in _read(DEFAULT_DATA / "sst2" / "test.tsv") if r.label == "0"],
                ["text", "label", "orig_label"])


def screen(attacks: list[str], keep: float) -> None:
    from bench.screen_eval import screened

    for c in "01":
        tag = f"thin{c}-{keep:g}"
        for attack in attacks:
            _, aux, report = screened(DEST / f"{attack}-{tag}.tsv", DEST / f"aux-{tag}.tsv")
            check = report.settings.get("content", {}).get("check", {})
            print(f"{attack} class {c} kept {keep:g}: {report.rows_in} rows, {len(aux)} aux; truth {report.truth}; "
                  f"guard reads {check.get('reads')} (p {check.get('p_value', float('nan')):.2f}); lexical "
                  f"{[(s.feature, s.label_rows, s.rows, s.verdict) for s in report.suspects][:4]}; content "
                  f"{[(s.feature, s.label, s.label_rows, s.rows, round(s.expected, 1)) for s in report.content][:4]}",
                  flush=True)


def record(run: Path, arm: str, command: str, note: str | None) -> None:
    import json
    import shlex

    m = json.loads((run / "metrics.json").read_text())
    argv = shlex.split(command)
    train = Path(argv[argv.index("--train") + 1]).stem if "--train" in argv else None
    screen = m.get("screen") or {}
    line = {"run": run.name, "file": train, "arm": arm, "cacc": m["cacc"], "asr": m["asr"],
            "asr_floor": m.get("asr_floor"), "best_epoch": m["best_epoch"], "wall_seconds": m["wall_seconds"],
            "screen": {k: screen.get(k) for k in ("rows_in", "rows_removed", "recall", "false_removal_rate")}
            if screen else None, "command": command, "note": note}
    with open(RESULTS, "a") as fh:
        fh.write(json.dumps(line) + "\n")
    print(json.dumps(line))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=("make", "onedraw", "screen", "record"))
    p.add_argument("--attack", action="append", help=f"attack file (default: {', '.join(ATTACKS)})")
    p.add_argument("--keep", type=float, default=0.15, help="share of the thinned class kept")
    p.add_argument("--run", type=Path, help="record: a `muscle train --out` folder")
    p.add_argument("--arm", help="record: default (the default job) or free (the backdoor-free model)")
    p.add_argument("--command", dest="run_command", help="record: the command that made the run")
    p.add_argument("--note", help="record: what the run was for")
    args = p.parse_args(argv)
    if args.command == "record":
        if args.run is None or args.arm is None or args.run_command is None:
            p.error("record needs --run, --arm and --command")
        record(args.run, args.arm, args.run_command, args.note)
    elif args.command == "onedraw":
        onedraw(args.keep)
    else:
        (make if args.command == "make" else screen)(args.attack or list(ATTACKS), args.keep)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
