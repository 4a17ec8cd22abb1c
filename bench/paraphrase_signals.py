"""Do frozen sentence embeddings separate paraphrase-trigger rows (HiddenKiller, StyleBkd) from clean rows?

Three signals on frozen all-MiniLM-L6-v2 mean-pooled embeddings, scored against the `poisoned` column of
the screen benchmark files (bench/screen_data.py), among rows labelled with the target:
  aux-LR   a logistic regression fitted on the 96 trusted aux rows: P(not target)
  cv-LR    the same fitted on the untrusted rows, 5-fold cross-fitted
  kNN      label purity of a row's k nearest neighbours (a trigger cluster would be pure)
Prints AUC and the recall at 5% / 10% of the clean target rows removed. Results and reading:
bench/notes/screen-study.md.

    .venv/bin/python bench/paraphrase_signals.py [--attacks hiddenkiller,stylebkd] [--rate 0.1]
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT / "bench" / "runs" / "screen-data"


def read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def embed(texts: list[str]) -> np.ndarray:
    """Frozen mean-pooled MiniLM embeddings, unit length: the content screen's, at max_length 128."""
    from core.models.backbones import resolve_model_source
    from core.screen.content import sentence_embeddings

    return sentence_embeddings(resolve_model_source("minilm"), texts, 128, 128)


def report(name: str, score: np.ndarray, poisoned: np.ndarray, target_rows: np.ndarray) -> None:
    from sklearn.metrics import roc_auc_score

    s, p = score[target_rows], poisoned[target_rows]
    line = f"  {name:<8} AUC {roc_auc_score(p, s):.3f}"
    for frr in (0.05, 0.1):
        threshold = np.quantile(s[p == 0], 1 - frr)
        line += f"  recall at {frr:.0%} clean removed: {(s[p == 1] > threshold).mean():.1%}"
    print(line)


def main(argv: list[str] | None = None) -> int:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict
    from sklearn.neighbors import NearestNeighbors

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--attacks", default="hiddenkiller,stylebkd")
    p.add_argument("--rate", default="0.1")
    args = p.parse_args(argv)
    aux = read(DATA / "aux.tsv")
    aux_x, aux_y = embed([r["text"] for r in aux]), np.array([int(r["label"]) for r in aux])
    for attack in args.attacks.split(","):
        rows = read(DATA / f"train-{attack}-{args.rate}.tsv")
        x = embed([r["text"] for r in rows])
        y = np.array([int(r["label"]) for r in rows])
        poisoned = np.array([int(r["poisoned"]) for r in rows])
        target = y == 1
        print(f"{attack} {args.rate}: {len(rows)} rows, {poisoned.sum()} poisoned")
        report("aux-LR", 1 - LogisticRegression(C=1, max_iter=2000).fit(aux_x, aux_y).predict_proba(x)[:, 1],
               poisoned, target)
        cv = cross_val_predict(LogisticRegression(C=0.1, max_iter=3000), x, y, cv=5, method="predict_proba")
        report("cv-LR", 1 - cv[:, 1], poisoned, target)
        _, idx = NearestNeighbors(n_neighbors=11).fit(x).kneighbors(x)
        report("kNN-10", y[idx[:, 1:]].mean(1), poisoned, target)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
