"""Per-epoch records of training runs that a session could not finish (full SST-2 runs take hours on this
CPU): read from the run's resumable checkpoint, kept in git, and put beside finished grid runs.

    python bench/epoch_records.py record RUN_DIR --tag TAG [--note TEXT]
    python bench/epoch_records.py table --tags full-default,full-refema09 [--epochs 3]

`record` reads RUN_DIR/last.safetensors or RUN_DIR/checkpoints/last.safetensors (written after every
epoch): the resolved settings and the per-epoch history, with the probes' ASR and floor. It appends one line to
bench/results/partial_runs.jsonl; a later line with the same tag replaces the earlier one. `table` prints
one Markdown row per (tag, epoch), from those lines or, for tags with a finished run, from
bench/results/grid.jsonl (`--tags full-newdefault/badnets` for one attack of a grid tag).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from render import latest_by, load_records, pct  # noqa: E402

PARTIAL = ROOT / "bench" / "results" / "partial_runs.jsonl"
GRID = ROOT / "bench" / "results" / "grid.jsonl"
FLOOR = "asr_floor"


def read_checkpoint(run_dir: Path) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from core.training.checkpoint_file import load_checkpoint  # only `record` needs the engine

    path = run_dir / "last.safetensors"
    if not path.exists():  # a `muscle train --out` folder keeps it under checkpoints/
        path = run_dir / "checkpoints" / "last.safetensors"
    ck = load_checkpoint(path)
    return {"config": ck["fingerprint"]["config"], "per_epoch": list(ck["history"]), "epochs_done": ck["epoch"]}


def make_record(run_dir: Path, tag: str, note: str, ck: dict[str, Any]) -> dict[str, Any]:
    return {"tag": tag, "run_dir": str(run_dir), "epochs_done": ck["epochs_done"],
            "epochs_planned": ck["config"].get("epochs"), "config": ck["config"], "per_epoch": ck["per_epoch"],
            "note": note, "recorded_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}


def load_partial(path: Path) -> dict[str, dict[str, Any]]:
    return latest_by(path, "tag") if path.exists() else {}


def epoch_histories(tags: list[str], partial: Path, grid: Path) -> dict[str, list[dict[str, Any]]]:
    """tag -> per-epoch history: a finished grid run of that tag wins over a partial record. A grid tag
    that ran several attacks is asked for as ``TAG/ATTACK``."""
    found = {tag: rec["per_epoch"] for tag, rec in load_partial(partial).items() if tag in tags}
    if grid.exists():
        for rec in load_records(grid):
            for name in (rec.get("tag"), f"{rec.get('tag')}/{rec.get('attack')}"):
                if name in tags and rec.get("metrics", {}).get("per_epoch"):
                    found[name] = rec["metrics"]["per_epoch"]
    return found


def row(tag: str, rec: dict[str, Any]) -> str:
    monitors = rec.get("monitors", {})
    floor = monitors.get(FLOOR)
    attack = next((k for k in monitors if k != FLOOR), None)
    asr = monitors.get(attack) if attack else None
    lift = "-" if asr is None or floor is None else f"{100 * (asr - floor):+.1f}"
    ga = rec.get("ga", {})
    ref = ga.get("ref_loss_mean")
    raw = ga.get("raw_tensors_per_step")
    return (f"| {tag} | {rec['epoch']} | {pct(rec.get('select_accuracy'))} | {pct(asr)} | {pct(floor)} | {lift} "
            f"| {'-' if ref is None else f'{ref:.2g}'} | {'-' if raw is None else f'{raw:g}'} "
            f"| {rec.get('seconds', 0) / 60:.0f} |")


def table(histories: dict[str, list[dict[str, Any]]], tags: list[str], epochs: int | None) -> str:
    lines = ["| run | epoch | selection acc | ASR | floor | ASR - floor | clean-batch loss | raw tensors/step "
             "| min |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for tag in tags:
        for rec in histories.get(tag, []):
            if epochs is None or rec["epoch"] <= epochs:
                lines.append(row(tag, rec))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record", help="append a run's per-epoch history from its last.safetensors")
    r.add_argument("run_dir", type=Path)
    r.add_argument("--tag", required=True)
    r.add_argument("--note", default="")
    r.add_argument("--results", type=Path, default=PARTIAL)
    t = sub.add_parser("table", help="per-epoch Markdown table of tags")
    t.add_argument("--tags", required=True, type=lambda v: [x for x in v.split(",") if x])
    t.add_argument("--epochs", type=int, help="only the first N epochs")
    t.add_argument("--results", type=Path, default=PARTIAL)
    t.add_argument("--grid", type=Path, default=GRID)
    args = ap.parse_args(argv)
    if args.cmd == "record":
        rec = make_record(args.run_dir, args.tag, args.note, read_checkpoint(args.run_dir))
        with args.results.open("a") as f:
            f.write(json.dumps(rec, sort_keys=True) + "\n")
        print(f"recorded {args.tag}: {rec['epochs_done']} of {rec['epochs_planned']} epochs")
        return 0
    print(table(epoch_histories(args.tags, args.results, args.grid), args.tags, args.epochs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
