"""End-to-end screen benchmark on the full data: one `muscle train` per (attack, rate, arm), resumable.

Arms:
  free    the backdoor-free model: the same training on only the file's clean rows (poisoned == 0), with
          the screen off. Its CACC is the ceiling, its ASR on each probe the floor.
  default the default job on the poisoned file (the screen on, as shipped).
  noscreen the same training on the poisoned file with the screen off.
  lora, muscle  the screen, then that method (default profile) on the kept rows; muscle aligned to the
          aux rows (the authors' reference batch).
  muscle-kept   the same, aligned to the kept rows (ga_reference=kept, the default profile's value).
  bki, cube     the baseline filter end to end, screen off (core/defenses/baselines): a vanilla victim
          trained on the poisoned file (BKI 10 epochs, CUBE 1), the filter, then 5 epochs (3 warm-up) on the
          kept rows; the filter's recall lands in the record's "screen".

Every run scores CACC on sst2/test.tsv and ASR on all four probes (badnets, addsent on the clean test rows;
the released HiddenKiller and StyleBkd test sets), so each backdoor-free run gives every probe's floor.
Run folders land in bench/runs/e2e/ (gitignored); `record` appends finished runs to
bench/results/e2e.jsonl.

    .venv/bin/python bench/screen_data.py
    .venv/bin/python bench/e2e.py run --attack badnets --rate 0.1 --arm free [--set KEY=VALUE ...]
    .venv/bin/python bench/e2e.py record
    .venv/bin/python bench/e2e.py table      # the markdown table of bench/results/efficacy.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.grid import DEFAULT_DATA, _read, _write  # noqa: E402
from bench.screen_data import OUT as DATA  # noqa: E402
from bench.screen_data import probe_path, train_path  # noqa: E402

RUNS = ROOT / "bench" / "runs" / "e2e"
RESULTS = ROOT / "bench" / "results" / "e2e.jsonl"
# Extra `muscle train` arguments per arm; every arm but the backdoor-free ones trains on the whole poisoned file.
ARMS: dict[str, list[str]] = {
    "free": ["--set", "screen=false"],
    "lora-free": ["--method", "lora", "--set", "screen=false"],
    "default": [],
    "noscreen": ["--set", "screen=false"],
    "lora": ["--method", "lora"],
    "muscle": ["--method", "muscle", "--set", "ga_reference=aux"],
    "muscle-kept": ["--method", "muscle", "--set", "ga_reference=kept"],
}
FILTERS = ("bki", "cube")
CLEAN_ONLY = ("free", "lora-free")  # arms trained on the file's clean rows alone


def run_dir(attack: str, rate: float, arm: str, tag: str) -> Path:
    return RUNS / f"{tag}-{attack}-{rate:g}-{arm}"


def clean_only(attack: str, rate: float) -> Path:
    out = DATA / f"train-{attack}-{rate:g}-clean.tsv"
    if not out.exists():
        rows = _read(train_path(attack, rate))
        _write(out, [r for r in rows if r.extra.get("poisoned") != "1"], ("poisoned", "orig_label"))
    return out


def train_argv(train: Path, out: Path, extra: list[str], sets: list[str]) -> list[str]:
    argv = [sys.executable, "-m", "core.cli", "train", "--train", str(train), "--aux", str(DATA / "aux.tsv"),
            "--select", str(DATA / "select.tsv"), "--eval", str(DEFAULT_DATA / "sst2" / "test.tsv"),
            "--probe", "badnets", "--probe", "addsent",
            "--probe-file", f"hiddenkiller={probe_path('hiddenkiller')}",
            "--probe-file", f"stylebkd={probe_path('stylebkd')}",
            "--out", str(out), "--no-progress", *extra]
    for s in sets:
        argv += ["--set", s]
    if (out / "checkpoints").is_dir():
        argv.append("--resume")
    return argv


def command(attack: str, rate: float, arm: str, out: Path, sets: list[str]) -> list[str]:
    train = clean_only(attack, rate) if arm in CLEAN_ONLY else train_path(attack, rate)
    return train_argv(train, out, ARMS[arm], sets)


def filter_steps(attack: str, rate: float, arm: str, out: Path, sets: list[str]) -> list[tuple[list[str], Path]]:
    """(argv, the file it leaves when done) for a baseline filter's victim, filter and final training."""
    from core.defenses.baselines import FILTERED_TRAINING, VICTIM_TRAINING

    train = train_path(attack, rate)
    (v_epochs, v_warmup), (f_epochs, f_warmup) = VICTIM_TRAINING[arm], FILTERED_TRAINING
    screen_off = ["--set", "screen=false"]
    victim = train_argv(train, out / "victim", ["--epochs", str(v_epochs), "--set", f"warmup_ratio={v_warmup:g}",
                                                *screen_off], sets)
    passthrough = {k: v for k, _, v in (s.partition("=") for s in sets) if k in ("seed", "device")}
    filt = [sys.executable, "-m", "core.defenses.baselines.run", "filter", "--defense", arm,
            "--model", str(out / "victim" / "model"), "--train", str(train), "--out", str(out / "kept.tsv"),
            "--report", str(out / "filter.json"),
            *(a for k, v in passthrough.items() for a in (f"--{k}", v))]
    final = train_argv(out / "kept.tsv", out, ["--epochs", str(f_epochs), "--set", f"warmup_ratio={f_warmup:g}",
                                               *screen_off], sets)
    return [(victim, out / "victim" / "metrics.json"), (filt, out / "filter.json"), (final, out / "metrics.json")]


def run(args: argparse.Namespace) -> int:
    out = run_dir(args.attack, args.rate, args.arm, args.tag)
    out.mkdir(parents=True, exist_ok=True)
    if args.arm in FILTERS:
        steps = filter_steps(args.attack, args.rate, args.arm, out, args.set)
    else:
        steps = [(command(args.attack, args.rate, args.arm, out, args.set), out / "metrics.json")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(out / "log.txt", "a") as log:
        for argv, done in steps:
            if done.exists():
                continue
            with open(out / "command.txt", "a") as fh:
                fh.write(" ".join(argv) + "\n")
            log.flush()
            rc = subprocess.call(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            if rc:
                return rc
    return 0


def filter_screen(report_path: Path) -> dict[str, Any]:
    """A baseline filter's report in the screen's terms (recall, share of clean rows removed)."""
    if not report_path.exists():
        return {}
    r = json.loads(report_path.read_text())
    clean_in = r["rows_in"] - r.get("poisoned_in", 0)
    return {"rows_in": r["rows_in"], "rows_removed": r["rows_removed"], "recall": r.get("poison_recall"),
            "false_removal_rate": r["clean_removed"] / clean_in if "clean_removed" in r and clean_in else None,
            "seconds": r.get("wall_seconds")}


def stage_seconds(out: Path) -> float:
    """A baseline filter's victim training and filtering, which its final training's wall leaves out."""
    total = 0.0
    for path, key in ((out / "victim" / "metrics.json", "wall_seconds"), (out / "filter.json", "wall_seconds")):
        if path.exists():
            total += json.loads(path.read_text()).get(key) or 0.0
    return total


def record(args: argparse.Namespace) -> int:
    done = set()
    if RESULTS.exists():
        done = {json.loads(line)["run"] for line in RESULTS.read_text().splitlines() if line.strip()}
    with open(RESULTS, "a") as fh:
        for metrics_path in sorted(RUNS.glob("*/metrics.json")):
            name = metrics_path.parent.name
            if name in done:
                continue
            m = json.loads(metrics_path.read_text())
            tag, rest = name.split("-", 1)
            arm = max((a for a in (*ARMS, *FILTERS) if rest.endswith(f"-{a}")), key=len)  # arms may hold "-"
            attack, rate = rest.removesuffix(f"-{arm}").rsplit("-", 1)
            screen = m.get("screen") or filter_screen(metrics_path.parent / "filter.json")
            fh.write(json.dumps({
                "run": name, "tag": tag, "attack": attack, "rate": float(rate), "arm": arm,
                "cacc": m["cacc"], "asr": m["asr"], "asr_floor": m.get("asr_floor"),
                "best_epoch": m["best_epoch"], "epochs": m["config"]["epochs"], "method": m["method"],
                "screen": {k: screen.get(k) for k in ("rows_in", "rows_removed", "recall", "false_removal_rate",
                                                      "seconds") if k in screen} or None,
                "wall_seconds": m["wall_seconds"] + stage_seconds(metrics_path.parent),
                "train_seconds": m["train_seconds"],
                "command": (metrics_path.parent / "command.txt").read_text().strip(),
            }) + "\n")
            print("recorded", name)
    return 0


PROBE = {"badnets": "badnets", "badnets-dirty": "badnets", "addsent": "addsent", "hiddenkiller": "hiddenkiller",
         "stylebkd": "stylebkd"}


# Files that keep every clean row at every rate (bench/screen_data.build_stylebkd_train): one backdoor-free
# run is the backdoor-free model of all their rates.
EVERY_CLEAN_ROW = {"stylebkd"}


def latest(path: Path = RESULTS) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                rows[rec["run"]] = rec
    return rows


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _exact(job: dict[str, Any]) -> bool:
    s = job.get("screen") or {}
    return s.get("recall") == 1.0 and s.get("false_removal_rate") == 0.0


def backdoor_free(by: dict[tuple[str, float, str], dict[str, Any]], attack: str,
                  rate: float) -> tuple[dict[str, Any] | None, str]:
    """The run that gives (attack, rate) its ceiling and floor, and how it stands in for its own free run."""
    free, job = by.get((attack, rate, "free")), by.get((attack, rate, "default"))
    if free is None and job is not None and _exact(job):
        return job, " (exact: the kept rows are the clean rows)"  # same training, same rows
    if free is None and attack in EVERY_CLEAN_ROW:
        free = next((r for (a, _, arm), r in sorted(by.items()) if a == attack and arm == "free"), None)
        return free, " (the same clean rows)" if free else ""
    if free is None:  # the backdoor-free model of another file of the same size (see the notes)
        return by.get(("badnets", 0.1, "free")), " (proxy)"
    return free, ""


def _order(cells: set[tuple[str, float]]) -> list[tuple[str, float]]:
    return sorted(cells, key=lambda t: (list(PROBE).index(t[0]), t[1]))


def table(records: dict[str, dict[str, Any]], tag: str = "v1", base: str | None = None) -> str:
    """Markdown: per attack and rate, the default job beside the backdoor-free model (CACC / ASR on the
    attack's probe), the gaps the goal bounds, the screen's recall and false removals, and wall time.
    With `base` (comma-separated tags, first wins), those tags' runs (same seed) fill the arms `tag` did not
    run (such default rows are marked with their tag), and a base's job that kept exactly the clean rows
    stands in for a missing backdoor-free run."""
    by = {(r["attack"], r["rate"], r["arm"]): r for r in records.values() if r["tag"] == tag}
    borrowed: dict[tuple[str, float], str] = {}
    bases = base.split(",") if base else []
    for r in sorted((r for r in records.values() if r["tag"] in bases), key=lambda r: bases.index(r["tag"])):
        key = (r["attack"], r["rate"], r["arm"])
        if key not in by:
            by[key] = r
            if r["arm"] == "default":
                borrowed[key[:2]] = r["tag"]
        elif r["arm"] == "default" and (key[:2] + ("free",)) not in by and _exact(r):
            by[key[:2] + ("free",)] = r  # that job kept exactly the clean rows: it is this cell's free model
    out = ["| attack | rate | backdoor-free CACC / ASR | default CACC / ASR | CACC gap | ASR over floor | "
           "screen recall / false removals | default wall (min) |", "|" + " --- |" * 8]
    for attack, rate in _order({(a, r) for a, r, _ in by}):
        job = by.get((attack, rate, "default"))
        free, proxy = backdoor_free(by, attack, rate)
        probe = PROBE[attack]
        f = f"{pct(free['cacc'])} / {pct(free['asr'][probe])}{proxy}" if free else "-"
        j = f"{pct(job['cacc'])} / {pct(job['asr'][probe])}" if job else "-"
        gap = f"{100 * (job['cacc'] - free['cacc']):+.1f}" if job and free else "-"
        over = f"{100 * (job['asr'][probe] - free['asr'][probe]):+.1f}" if job and free else "-"
        s = (job or {}).get("screen") or {}
        scr = f"{pct(s.get('recall'))} / {pct(s.get('false_removal_rate'))}" if s else "-"
        wall = f"{job['wall_seconds'] / 60:.0f}" if job else "-"
        mark = f" ({borrowed[attack, rate]})" if (attack, rate) in borrowed else ""
        out.append(f"| {attack}{mark} | {rate:g} | {f} | {j} | {gap} | {over} | {scr} | {wall} |")
    return "\n".join(out)


def seeds_table(records: dict[str, dict[str, Any]], tags: list[str]) -> str:
    """Markdown: per attack and rate, each seed's (tag's) CACC gap and ASR over its own seed's floor, and
    in how many seeds both bounds of the goal (CACC within 2, ASR at most 5 over) held."""
    by_tag = {t: {(r["attack"], r["rate"], r["arm"]): r for r in records.values() if r["tag"] == t} for t in tags}
    cells = {(a, r) for by in by_tag.values() for a, r, arm in by if arm == "default"}
    out = [f"| attack | rate | default CACC / ASR ({', '.join(tags)}) | CACC gap | ASR over floor | goal met |",
           "|" + " --- |" * 6]
    for attack, rate in _order(cells):
        probe, figures, gaps, overs, met, n = PROBE[attack], [], [], [], 0, 0
        for t in tags:
            job = by_tag[t].get((attack, rate, "default"))
            free, proxy = backdoor_free(by_tag[t], attack, rate)
            if job is None or free is None or proxy == " (proxy)":
                figures.append("-")
                gaps.append("-")
                overs.append("-")
                continue
            gap, over = 100 * (job["cacc"] - free["cacc"]), 100 * (job["asr"][probe] - free["asr"][probe])
            figures.append(f"{pct(job['cacc'])} / {pct(job['asr'][probe])}")
            gaps.append(f"{gap:+.1f}")
            overs.append(f"{over:+.1f}")
            n += 1
            met += gap >= -2 and over <= 5
        out.append(f"| {attack} | {rate:g} | {'; '.join(figures)} | {'; '.join(gaps)} | {'; '.join(overs)} | "
                   f"{met} of {n} |")
    return "\n".join(out)


METHOD_ROWS = {"free": "backdoor-free model (clean rows only)", "default": "**screen + vanilla (the default job)**",
               "noscreen": "vanilla, no screen", "lora": "screen + lora",
               "lora-free": "backdoor-free model, lora", "muscle": "screen + muscle, aligned to the aux rows",
               "muscle-kept": "screen + muscle, aligned to the kept rows",
               "bki": "BKI (victim 10 epochs, filter, 5 epochs)", "cube": "CUBE (victim 1 epoch, filter, 5 epochs)"}
METHOD_ATTACKS = ("badnets", "badnets-dirty", "addsent", "hiddenkiller", "stylebkd")


def methods_table(records: dict[str, dict[str, Any]], tag: str, rate: float = 0.1) -> str:
    """Markdown: rows = arms, columns = attacks at `rate`: CACC / ASR on the attack's probe, and for the
    screen and the filters their recall / false removals; the last column the median wall per job."""
    by = {(r["attack"], r["rate"], r["arm"]): r for r in records.values() if r["tag"] == tag}
    out = [f"| method | {' | '.join(METHOD_ATTACKS)} | wall per job (min, median) |", "|" + " --- |" * 7]
    for arm, label in METHOD_ROWS.items():
        cells, walls, screened = [], [], False
        for attack in METHOD_ATTACKS:
            rec = by.get((attack, rate, arm))
            if rec is None and arm == "free":
                rec, how = backdoor_free(by, attack, rate)
                rec = None if how == " (proxy)" else rec
            if rec is None:
                cells.append("-")
                continue
            s = rec.get("screen") or {}
            screened |= bool(s)
            filtered = bool(s) and arm not in CLEAN_ONLY
            found = f" ({pct(s.get('recall'))} / {pct(s.get('false_removal_rate'))})" if filtered else ""
            cells.append(f"{pct(rec['cacc'])} / {pct(rec['asr'][PROBE[attack]])}{found}")
            walls.append(rec["wall_seconds"] / 60)
        wall = f"{sorted(walls)[len(walls) // 2]:.1f}" if walls else "-"
        if arm in ("lora", "muscle") and walls and not screened:  # run with screen=false
            label = label.removeprefix("screen + ") + ", no screen"
        out.append(f"| {label} | {' | '.join(cells)} | {wall} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--attack", required=True)
    r.add_argument("--rate", type=float, required=True)
    r.add_argument("--arm", choices=[*ARMS, *FILTERS], required=True)
    r.add_argument("--tag", default="v1")
    r.add_argument("--set", action="append", default=[])
    sub.add_parser("record")
    t = sub.add_parser("table")
    t.add_argument("--tag", default="v1")
    t.add_argument("--seeds", help="comma-separated tags, one per seed: the per-seed table")
    t.add_argument("--methods", action="store_true", help="the methods-at-10%% table of --tag")
    t.add_argument("--base", help="comma-separated tags (same seed) whose runs fill the arms --tag did not run")
    args = p.parse_args(argv)
    if args.cmd == "table":
        if args.seeds:
            print(seeds_table(latest(), args.seeds.split(",")))
        elif args.methods:
            print(methods_table(latest(), args.tag))
        else:
            print(table(latest(), args.tag, args.base))
        return 0
    return run(args) if args.cmd == "run" else record(args)


if __name__ == "__main__":
    raise SystemExit(main())
