"""What the default job's screen does with each kind of row, and how sure the counter-example reader is.

    .venv/bin/python bench/counterexample_audit.py hiddenkiller-0.1 stylebkd-0.1 [--seed 42]

For each benchmark file (`bench/screen_data.py`): rows counted by their `poisoned` and `orig_label`
columns and what the screen did (kept, out, back with the reader's class); then, for the rows back, the
reader's probability of the class it gave (a logistic regression on the frozen embeddings fitted on the
kept rows, `core.screen.relabel.fit_reader`), split into rows it got right (a flipped poison
row back with its original class) and wrong (a row whose original class is the one it had). Screen only:
a few minutes a file with the embeddings cached (`bench/content_disagreement.py`).
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.content_disagreement import embeddings  # noqa: E402
from bench.screen_data import OUT  # noqa: E402
from bench.screen_eval import screened  # noqa: E402
from core.config import resolve_config  # noqa: E402
from core.screen.relabel import fit_reader  # noqa: E402


def reader_confidence(texts: list[str], labels: np.ndarray, removed: set[int], back: list[int]) -> np.ndarray:
    """The probability the kept-row reader gives each row in `back` for the class it reads."""
    x = embeddings(texts)
    keep = np.array([i not in removed for i in range(len(texts))])
    return fit_reader(x[keep], labels[keep]).predict_proba(x[back]).max(axis=1)


def audit(name: str, seed: int) -> None:
    path = OUT / f"train-{name}.tsv"
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    _, _, report = screened(path, config=resolve_config("default").model_copy(update={"seed": seed}))
    removed = {r.row for r in report.removed}
    kinds: Counter[tuple[str, str]] = Counter()
    for i, r in enumerate(rows):
        kind = ("poison, flipped" if r["orig_label"] != r["label"] else "poison, clean-label") \
            if r["poisoned"] == "1" else f"clean, label {r['label']}"
        state = "kept" if i not in removed else (
            f"back as {report.relabel[i]}" if i in report.relabel else "out")
        kinds[kind, state] += 1
    print(f"== {name} (seed {seed})")
    for (kind, state), n in sorted(kinds.items()):
        print(f"  {kind:22s} {state:10s} {n:5d}")
    back = sorted(report.relabel)
    if not back:
        return
    labels = np.array([int(r["label"]) for r in rows])
    conf = reader_confidence([r["text"] for r in rows], labels, removed, back)
    right = np.array([rows[i]["orig_label"] == str(report.relabel[i]) for i in back])
    for what, mask in (("right", right), ("wrong", ~right)):
        if mask.any():
            q = np.percentile(conf[mask], [10, 25, 50, 75, 90])
            print(f"  reader confidence, {what} ({mask.sum()}): p10-p90 " + " ".join(f"{v:.2f}" for v in q))
    for bar in (0.6, 0.7, 0.8, 0.9):
        print(f"  bar {bar}: right {int((conf[right] >= bar).sum())}, wrong {int((conf[~right] >= bar).sum())}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", help="benchmark file names, e.g. hiddenkiller-0.1")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    for name in args.files:
        audit(name, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
