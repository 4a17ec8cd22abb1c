"""The efficacy table from the grid's JSONL: CACC, ASR, canary ASR and wall time per method and attack,
and how well the canary ASR tracked the real ASR.

    .venv/bin/python bench/efficacy_table.py [--results bench/results/grid.jsonl] > bench/results/efficacy.md
    .venv/bin/python bench/efficacy_table.py --tag fidelity=reference --tag full-newdefault=default

Reads the `efficacy-reference` and `efficacy-default` tags (`bench/efficacy_table.sh`), with the
screening's Badnets cells where those lack them; `--tag TAG=PROFILE` reads other grid tags instead
(the full-data runs), without that fallback. Each cell is
"CACC / ASR (floor) · canary ASR": ASR of the shipped model on the attack's probe; floor = clean
non-target test rows already called the target; canary ASR = the secret canary's ASR at the epoch the
calibration chose (on held-back clean rows). Tracking: the canary run trains on the poisoned data plus
the canary, so every epoch of it gives a (canary ASR, real attack ASR) pair; we report their Pearson
and Spearman correlation, and the same for the shipped cells.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # sibling scripts: one reader of the grid's JSONL
from render import load_records, pct  # noqa: E402

TAGS = {"efficacy-reference": "reference", "efficacy-default": "default"}
# Cells the screening already ran on the same data and epochs (without the canary): used when the
# efficacy tags lack them, marked with a dagger.
SCREENING = {"screen-vanilla": ("vanilla", "reference"), "screen-ref": ("muscle", "reference")}
ROWS = [("vanilla", "reference"), ("lora", "reference"), ("muscle", "reference"), ("muscle", "default")]
ATTACKS = ["badnets", "addsent", "hiddenkiller"]


def load(path: Path, tags: dict[str, str] | None = None) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Cells by (method, profile, attack); ``tags`` maps grid tag -> profile (None: the efficacy tags
    plus the screening fallback)."""
    screening = SCREENING if tags is None else {}
    tags = TAGS if tags is None else tags
    cells: dict[tuple[str, str, str], dict[str, Any]] = {}
    screened: dict[tuple[str, str, str], dict[str, Any]] = {}
    for rec in load_records(path):
        if rec.get("tag") in tags:
            cells[(rec["defense"], tags[rec["tag"]], rec["attack"])] = rec
        elif screening.get(rec.get("tag")) == (rec["defense"], "reference"):
            screened[(rec["defense"], "reference", rec["attack"])] = {**rec, "screening": True}
    return {**screened, **cells}


def cell(rec: dict[str, Any] | None) -> str:
    if rec is None:
        return "not run"
    m = rec["metrics"]
    mark = " †" if rec.get("screening") else ""
    return (f"{pct(rec['cacc'])} / {pct(rec['asr'])} ({pct(m.get('asr_floor'))}) · {pct(m.get('canary_asr'))}"
            + mark)


def ranks(xs: list[float]) -> list[float]:
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    out = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2
        i = j + 1
    return out


def correlations(pairs: list[tuple[float, float]]) -> str:
    if len(pairs) < 3:
        return f"{len(pairs)} pairs: too few"
    xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
    try:
        pearson = statistics.correlation(xs, ys)
        spearman = statistics.correlation(ranks(xs), ranks(ys))
    except statistics.StatisticsError:
        return f"{len(pairs)} pairs: constant values"
    return f"{len(pairs)} pairs: Pearson {pearson:.2f}, Spearman {spearman:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "grid.jsonl")
    parser.add_argument("--tag", action="append", metavar="TAG=PROFILE",
                        help="read this grid tag as this profile's row (repeatable)")
    args = parser.parse_args(argv)
    tags = None
    if args.tag:
        pairs = [t.split("=", 1) for t in args.tag]
        if any(len(p) != 2 or p[1] not in ("reference", "default") for p in pairs):
            parser.error("--tag wants TAG=reference or TAG=default")
        tags = {tag: profile for tag, profile in pairs}
    cells = load(args.results, tags)
    print("| method | profile | " + " | ".join(a.capitalize() for a in ATTACKS) + " | wall (sum) |")
    print("| --- | --- | " + " | ".join("---" for _ in ATTACKS) + " | --- |")
    for method, profile in ROWS:
        recs = [cells.get((method, profile, a)) for a in ATTACKS]
        wall = sum(r["wall_seconds"] for r in recs if r) / 60
        print(f"| {method} | {profile} | " + " | ".join(cell(r) for r in recs) + f" | {wall:.0f} min |")

    shipped, per_epoch, chosen = [], [], []
    for (method, profile, attack), rec in sorted(cells.items()):
        canary = rec["metrics"].get("canary") or {}
        if rec["metrics"].get("canary_asr") is None:
            continue
        shipped.append((rec["metrics"]["canary_asr"], rec["asr"]))
        for cand in canary.get("candidates", []):
            for ep in cand.get("per_epoch", []):
                real = (ep.get("probe_asr") or {}).get(attack)
                if real is not None:
                    per_epoch.append((ep["canary_asr"], real))
            real = (cand.get("probe_asr") or {}).get(attack)
            if real is not None:
                chosen.append(f"{method}/{profile}/{attack}: epoch {cand['epoch']}, canary "
                              f"{pct(cand['canary_asr'])}, real {pct(real)} (same canary run)")
    if any(r.get("screening") for r in cells.values()):
        print()
        print("† from the screening runs (same data and epochs, no canary).")
    print()
    print(f"- canary ASR vs real ASR, every epoch of every canary run: {correlations(per_epoch)}")
    print(f"- canary ASR of the chosen epoch vs the shipped model's real ASR: {correlations(shipped)}")
    for line in chosen:
        print(f"  - {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
