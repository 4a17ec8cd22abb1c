"""End-to-end screen benchmark on the full data: one `muscle train` per (attack, rate, arm), resumable.

Arms:
  free    the backdoor-free model: the same training on only the file's clean rows (poisoned == 0), with
          the screen off. Its CACC is the ceiling, its ASR on each probe the floor.
  default the default job on the poisoned file (the screen on, as shipped).
  noscreen the same training on the poisoned file with the screen off.

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
ARMS = ("free", "default", "noscreen")


def run_dir(attack: str, rate: float, arm: str, tag: str) -> Path:
    return RUNS / f"{tag}-{attack}-{rate:g}-{arm}"


def clean_only(attack: str, rate: float) -> Path:
    out = DATA / f"train-{attack}-{rate:g}-clean.tsv"
    if not out.exists():
        rows = _read(train_path(attack, rate))
        _write(out, [r for r in rows if r.extra.get("poisoned") != "1"], ("poisoned", "orig_label"))
    return out


def command(attack: str, rate: float, arm: str, out: Path, sets: list[str]) -> list[str]:
    train = clean_only(attack, rate) if arm == "free" else train_path(attack, rate)
    argv = [sys.executable, "-m", "core.cli", "train", "--train", str(train), "--aux", str(DATA / "aux.tsv"),
            "--select", str(DATA / "select.tsv"), "--eval", str(DEFAULT_DATA / "sst2" / "test.tsv"),
            "--probe", "badnets", "--probe", "addsent",
            "--probe-file", f"hiddenkiller={probe_path('hiddenkiller')}",
            "--probe-file", f"stylebkd={probe_path('stylebkd')}",
            "--out", str(out), "--no-progress"]
    if arm != "default":
        argv += ["--set", "screen=false"]
    for s in sets:
        argv += ["--set", s]
    if (out / "checkpoints").is_dir():
        argv.append("--resume")
    return argv


def run(args: argparse.Namespace) -> int:
    out = run_dir(args.attack, args.rate, args.arm, args.tag)
    out.mkdir(parents=True, exist_ok=True)
    argv = command(args.attack, args.rate, args.arm, out, args.set)
    (out / "command.txt").write_text(" ".join(argv) + "\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(out / "log.txt", "a") as log:
        return subprocess.call(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


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
            attack, rate, arm = rest.rsplit("-", 2)
            screen = m.get("screen") or {}
            fh.write(json.dumps({
                "run": name, "tag": tag, "attack": attack, "rate": float(rate), "arm": arm,
                "cacc": m["cacc"], "asr": m["asr"], "asr_floor": m.get("asr_floor"),
                "best_epoch": m["best_epoch"], "epochs": m["config"]["epochs"], "method": m["method"],
                "screen": {k: screen.get(k) for k in ("rows_in", "rows_removed", "recall", "false_removal_rate",
                                                      "seconds") if k in screen} or None,
                "wall_seconds": m["wall_seconds"], "train_seconds": m["train_seconds"],
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


def table(records: dict[str, dict[str, Any]], tag: str = "v1") -> str:
    """Markdown: per attack and rate, the default job beside the backdoor-free model (CACC / ASR on the
    attack's probe), the gaps the goal bounds, the screen's recall and false removals, and wall time."""
    by = {(r["attack"], r["rate"], r["arm"]): r for r in records.values() if r["tag"] == tag}
    out = ["| attack | rate | backdoor-free CACC / ASR | default CACC / ASR | CACC gap | ASR over floor | "
           "screen recall / false removals | default wall (min) |", "|" + " --- |" * 8]
    for attack, rate in sorted({(a, r) for a, r, _ in by}, key=lambda t: (list(PROBE).index(t[0]), t[1])):
        free, job = by.get((attack, rate, "free")), by.get((attack, rate, "default"))
        probe = PROBE[attack]
        proxy = ""
        exact = ((job or {}).get("screen") or {})
        if free is None and exact.get("recall") == 1.0 and exact.get("false_removal_rate") == 0.0:
            free, proxy = job, " (exact: the kept rows are the clean rows)"  # same training, same rows
        if free is None and attack in EVERY_CLEAN_ROW:
            free = next((r for (a, _, arm), r in sorted(by.items()) if a == attack and arm == "free"), None)
            proxy = " (the same clean rows)" if free else ""
        if free is None:  # the backdoor-free model of another file of the same size (see the notes)
            free = by.get(("badnets", 0.1, "free"))
            proxy = " (proxy)"
        f = f"{pct(free['cacc'])} / {pct(free['asr'][probe])}{proxy}" if free else "-"
        j = f"{pct(job['cacc'])} / {pct(job['asr'][probe])}" if job else "-"
        gap = f"{100 * (job['cacc'] - free['cacc']):+.1f}" if job and free else "-"
        over = f"{100 * (job['asr'][probe] - free['asr'][probe]):+.1f}" if job and free else "-"
        s = (job or {}).get("screen") or {}
        scr = f"{pct(s.get('recall'))} / {pct(s.get('false_removal_rate'))}" if s else "-"
        wall = f"{job['wall_seconds'] / 60:.0f}" if job else "-"
        out.append(f"| {attack} | {rate:g} | {f} | {j} | {gap} | {over} | {scr} | {wall} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--attack", required=True)
    r.add_argument("--rate", type=float, required=True)
    r.add_argument("--arm", choices=ARMS, required=True)
    r.add_argument("--tag", default="v1")
    r.add_argument("--set", action="append", default=[])
    sub.add_parser("record")
    t = sub.add_parser("table")
    t.add_argument("--tag", default="v1")
    args = p.parse_args(argv)
    if args.cmd == "table":
        print(table(latest(), args.tag))
        return 0
    return run(args) if args.cmd == "run" else record(args)


if __name__ == "__main__":
    raise SystemExit(main())
