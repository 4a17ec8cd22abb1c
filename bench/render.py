"""Paper-style tables and a CACC-vs-ASR scatter from the grid's JSONL.

    python bench/render.py [--results bench/results/grid.jsonl] [--out-dir bench/results] [--tag main]

Writes `tables.md` (one section per tag and dataset: Table 1 layout — rows defenses, columns each
attack's CACC↑ / ASR↓ — and, when ablation runs are present, Table 3 layout with the MS / LR / GA
marks) and `scatter.png`. Values are percentages; with several seeds, mean±sample std. The lowest
ASR of each column is bold, as in the paper. Only the latest `ok` record of each cell counts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

DEFENSE_ORDER = ["vanilla", "lora", "adapter", "prefix", "onion", "bki", "cube", "strip", "rap", "muscle",
                 "muscle-no-ga", "muscle-no-ms", "ga-only"]
DEFENSE_NAMES = {"vanilla": "Vanilla", "lora": "LoRA", "adapter": "Adapter", "prefix": "Prefix",
                 "onion": "ONION", "bki": "BKI", "cube": "CUBE", "strip": "STRIP", "rap": "RAP",
                 "muscle": "MuScleLoRA", "muscle-no-ga": "MuScleLoRA w/o GA",
                 "muscle-no-ms": "MuScleLoRA w/o MS", "ga-only": "GA only"}
ATTACK_ORDER = ["badnets", "addsent", "hiddenkiller", "stylebkd"]
ATTACK_NAMES = {"badnets": "Badnets", "addsent": "Addsent", "hiddenkiller": "HiddenKiller",
                "stylebkd": "StyleBkd"}
# Table 3: (method, paper row name, (MS, LR, GA)).
ABLATION: list[tuple[str, str, tuple[bool, bool, bool]]] = [
    ("vanilla", "Vanilla", (False, False, False)),
    ("muscle", "MuScleLoRA", (True, True, True)),
    ("lora", "w/o MS, GA", (False, True, False)),
    ("ga-only", "w/o MS, LR", (False, False, True)),
    ("muscle-no-ga", "w/o GA", (True, True, False)),
    ("muscle-no-ms", "w/o MS", (False, True, True)),
]
ABLATION_ONLY = {"ga-only", "muscle-no-ga", "muscle-no-ms"}

Cells = dict[tuple[str, str], dict[str, list[float]]]  # (defense, attack) -> {"cacc": [...], "asr": [...]}


def pct(value: float | None) -> str:
    """A fraction as a percentage with one decimal, '-' when missing."""
    return "-" if value is None else f"{100 * value:.1f}"


def latest_by(path: Path, key: str, ok_only: bool = False) -> dict[str, dict[str, Any]]:
    """The latest JSONL line per ``rec[key]`` (a later line replaces an earlier one); ``ok_only`` keeps only
    lines with status ``ok``."""
    latest: dict[str, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        if not ok_only or rec.get("status") == "ok":
            latest[rec[key]] = rec
    return latest


def load_records(path: Path) -> list[dict[str, Any]]:
    """The latest ok record per cell (a rerun or a re-record replaces the earlier line)."""
    return list(latest_by(path, "cell", ok_only=True).values())


def collect(records: Iterable[dict[str, Any]]) -> Cells:
    cells: Cells = {}
    for rec in records:
        slot = cells.setdefault((rec["defense"], rec["attack"]), {"cacc": [], "asr": []})
        for key in ("cacc", "asr"):
            if isinstance(rec.get(key), (int, float)):
                slot[key].append(float(rec[key]))
    return cells


def _order(values: Iterable[str], order: Sequence[str]) -> list[str]:
    present = set(values)
    return [v for v in order if v in present] + sorted(present - set(order))


def fmt(values: Sequence[float]) -> str:
    if not values:
        return "–"
    mean = 100 * statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.2f}"
    return f"{mean:.2f}±{100 * statistics.stdev(values):.2f}"


def _best_asr(cells: Cells, defenses: Sequence[str], attack: str) -> float | None:
    means = [statistics.fmean(cells[(d, attack)]["asr"]) for d in defenses
             if (d, attack) in cells and cells[(d, attack)]["asr"]]
    return min(means) if means else None


def _value_cells(cells: Cells, defense: str, attacks: Sequence[str],
                 best: dict[str, float | None]) -> list[str]:
    out = []
    for attack in attacks:
        slot = cells.get((defense, attack), {"cacc": [], "asr": []})
        asr = fmt(slot["asr"])
        if slot["asr"] and best[attack] is not None and statistics.fmean(slot["asr"]) == best[attack]:
            asr = f"**{asr}**"
        out += [fmt(slot["cacc"]), asr]
    return out


def _header(first: list[str], attacks: Sequence[str], first_align: list[str]) -> list[str]:
    names = [f"{ATTACK_NAMES.get(a, a)} {m}" for a in attacks for m in ("CACC↑", "ASR↓")]
    return ["| " + " | ".join([*first, *names]) + " |",
            "| " + " | ".join([*first_align, *["---:"] * len(names)]) + " |"]


def table1(records: Sequence[dict[str, Any]]) -> str:
    """Rows: defenses; columns: each attack's CACC and ASR (the paper's Tables 1 and 2)."""
    cells = collect(records)
    attacks = _order({a for _, a in cells}, ATTACK_ORDER)
    defenses = _order({d for d, _ in cells}, DEFENSE_ORDER)
    best = {a: _best_asr(cells, defenses, a) for a in attacks}
    lines = _header(["Defense"], attacks, ["---"])
    for d in defenses:
        values = _value_cells(cells, d, attacks, best)
        lines.append("| " + " | ".join([DEFENSE_NAMES.get(d, d), *values]) + " |")
    return "\n".join(lines)


def table3(records: Sequence[dict[str, Any]]) -> str | None:
    """The ablation layout (paper Table 3); None unless an ablation-only method was run."""
    cells = collect(records)
    present = {d for d, _ in cells}
    if not present & ABLATION_ONLY:
        return None
    attacks = _order({a for _, a in cells}, ATTACK_ORDER)
    rows = [row for row in ABLATION if row[0] in present]
    best = {a: _best_asr(cells, [r[0] for r in rows], a) for a in attacks}
    lines = _header(["Method", "MS", "LR", "GA"], attacks, ["---", ":-:", ":-:", ":-:"])
    for method, name, marks in rows:
        ticks = ["✓" if m else "×" for m in marks]
        lines.append("| " + " | ".join([name, *ticks, *_value_cells(cells, method, attacks, best)]) + " |")
    return "\n".join(lines)


def seeds_note(records: Sequence[dict[str, Any]]) -> str:
    seeds = sorted({int(r["seed"]) for r in records})
    return (f"CACC and ASR in percent; seeds {', '.join(map(str, seeds))}"
            + (" (mean±sample std)." if len(seeds) > 1 else "."))


def render_markdown(records: Sequence[dict[str, Any]]) -> str:
    """One section per (tag, dataset)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rec in records:
        groups.setdefault((rec.get("tag", "main"), rec["dataset"]), []).append(rec)
    parts = []
    for (tag, dataset), recs in sorted(groups.items()):
        parts += [f"## {dataset} ({tag})", "", seeds_note(recs), "", table1(recs), ""]
        ablation = table3(recs)
        if ablation:
            parts += ["Ablations (paper Table 3 layout):", "", ablation, ""]
    return "\n".join(parts)


def scatter(records: Sequence[dict[str, Any]], path: Path) -> Path:
    """CACC (y) against ASR (x), one point per defense and attack (seed mean); colour = defense."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = collect(records)
    defenses = _order({d for d, _ in cells}, DEFENSE_ORDER)
    attacks = _order({a for _, a in cells}, ATTACK_ORDER)
    markers = ["o", "s", "^", "D", "v", "P"]
    palette = plt.get_cmap("tab10" if len(defenses) <= 10 else "tab20")  # tab10: more distinct hues
    def colors(i: int) -> Any:
        return palette(i % palette.N)
    fig, ax = plt.subplots(figsize=(7, 5))
    for i, d in enumerate(defenses):
        for j, a in enumerate(attacks):
            slot = cells.get((d, a))
            if not slot or not slot["cacc"] or not slot["asr"]:
                continue
            ax.scatter(100 * statistics.fmean(slot["asr"]), 100 * statistics.fmean(slot["cacc"]),
                       color=colors(i), marker=markers[j % len(markers)], s=50)
    # Legend: one colour per defense, one marker per attack.
    for i, d in enumerate(defenses):
        ax.scatter([], [], color=colors(i), marker="o", label=DEFENSE_NAMES.get(d, d))
    for j, a in enumerate(attacks):
        ax.scatter([], [], color="grey", marker=markers[j % len(markers)], label=ATTACK_NAMES.get(a, a))
    ax.set_xlabel("ASR (%) ↓")
    ax.set_ylabel("CACC (%) ↑")
    ax.set_xlim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title("Clean accuracy against attack success (better: top left)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/render.py", description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "grid.jsonl")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--tag", help="only this grid tag")
    parser.add_argument("--dataset", help="only this dataset")
    args = parser.parse_args(argv)
    if not args.results.exists():
        print(f"error: {args.results} does not exist; run bench/grid.py first", file=sys.stderr)
        return 2
    records = [r for r in load_records(args.results)
               if (args.tag is None or r.get("tag") == args.tag)
               and (args.dataset is None or r["dataset"] == args.dataset)]
    if not records:
        print("error: no finished cells match", file=sys.stderr)
        return 2
    markdown = render_markdown(records)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "tables.md").write_text(markdown)
    scatter(records, args.out_dir / "scatter.png")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
