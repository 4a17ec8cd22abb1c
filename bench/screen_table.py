"""Markdown table of screening runs from the grid's JSONL: one row per cell, with what it changed.

    python bench/screen_table.py [--results bench/results/grid.jsonl] [--prefix screen-]

Columns: tag, method, attack, settings changed from the profile (`--lr`, `--set`), CACC and ASR of the
shipped epoch, then per epoch "selection accuracy / ASR (floor) / share of raw (unaligned) steps", and wall
time. Only the latest `ok` record of each cell counts, as in `render.py`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # sibling scripts: one reader of the grid's JSONL
from render import load_records, pct  # noqa: E402


def changed(rec: dict[str, Any]) -> str:
    opts = rec.get("options") or {}
    parts = [f"lr {opts['lr']:g}"] if opts.get("lr") else []
    parts += list(opts.get("sets") or [])
    return " ".join(parts) or "-"


def epochs(rec: dict[str, Any]) -> str:
    out = []
    for ep in (rec.get("metrics") or {}).get("per_epoch", []):
        monitors = dict(ep.get("monitors") or {})
        floor = monitors.pop("asr_floor", None)
        asr = next(iter(monitors.values()), None)
        cell = f"{100 * ep['select_accuracy']:.0f}/" + ("-" if asr is None else f"{100 * asr:.0f}")
        cell += "" if floor is None else f" (floor {100 * floor:.0f})"
        raw = (ep.get("ga") or {}).get("raw_share")
        out.append(cell + ("" if raw is None else f"/{100 * raw:.0f}"))
    return ", ".join(out)


def row(rec: dict[str, Any]) -> str:
    return (f"| {rec['tag']} | {rec['defense']} | {rec['attack']} | {changed(rec)} | {pct(rec.get('cacc'))} | "
            f"{pct(rec.get('asr'))} | {epochs(rec)} | {rec['wall_seconds'] / 60:.1f} min |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "grid.jsonl")
    parser.add_argument("--prefix", default="screen-")
    args = parser.parse_args(argv)
    print("| tag | method | attack | changed | CACC | ASR | per epoch sel/ASR/raw% | wall |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    screened = [r for r in load_records(args.results) if str(r.get("tag", "")).startswith(args.prefix)]
    for rec in sorted(screened, key=lambda r: r["recorded_at"]):
        print(row(rec))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
