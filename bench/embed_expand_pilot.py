"""Pilot: expand the default screen's removals in the frozen-embedding space.

The default screen (lexical + content) finds a style trigger's rows that carry glued punctuation; the
rest share the style but no single feature. Here: per class with removed rows, a logistic regression on
the frozen sentence embeddings learns removed rows against the class's kept rows (cross-fitted), and each
fold model scores the trusted rows of the class. Reported: AUC of the score for the poisoned rows still
kept against the clean kept rows of the class, and what a threshold at the highest trusted score (or a
quantile of the trusted scores) would add.

    .venv/bin/python bench/embed_expand_pilot.py train-stylebkd-0.1 train-hiddenkiller-0.1 ...
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.content_disagreement import embeddings  # noqa: E402
from bench.screen_data import OUT  # noqa: E402
from bench.screen_eval import screened  # noqa: E402


def pilot(name: str, c_reg: float = 1.0) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    train, aux, report = screened(OUT / f"{name}.tsv")
    removed = report.removed_rows
    poisoned = np.array([bool(ex.poisoned) for ex in train])
    y = np.array([ex.label for ex in train])
    x = embeddings([ex.text for ex in train])
    ax = embeddings([ex.text for ex in aux])
    ay = np.array([ex.label for ex in aux])
    t = report.truth
    print(f"{name}: removed {len(removed)} recall {t['recall']} false {t['false_removal_rate']}")
    left = int(poisoned.sum() - poisoned[list(removed)].sum())
    for c in sorted({int(y[i]) for i in removed}):
        pool = np.array([i for i in np.flatnonzero(y == c)])
        seed = np.array([i in removed for i in pool])
        if seed.sum() < 5:
            continue
        trusted = ax[ay == c]
        score = np.zeros(len(pool))
        tmax, tscores = [], []
        for fit, held in StratifiedKFold(5, shuffle=True, random_state=0).split(np.zeros(len(pool)), seed):
            m = LogisticRegression(C=c_reg, class_weight="balanced", max_iter=2000).fit(x[pool[fit]], seed[fit])
            score[held] = m.decision_function(x[pool[held]])
            ts = m.decision_function(trusted)
            tmax.append(ts.max())
            tscores.append(ts)
        kept = ~seed
        p_kept = poisoned[pool][kept]
        s_kept = score[kept]
        auc = roc_auc_score(p_kept, s_kept) if 0 < p_kept.sum() < len(p_kept) else float("nan")
        print(f"  class {c}: seed {seed.sum()} (poisoned {poisoned[pool][seed].sum()}), kept {kept.sum()} "
              f"with {p_kept.sum()} poisoned (of {left} left), AUC {auc:.3f}")
        for q in (1.0, 0.95, 0.9):
            thr = float(np.mean([np.quantile(ts, q) for ts in tscores]))
            add = s_kept > thr
            print(f"    trusted q{q}: thr {thr:.2f}: adds {add.sum()}, poisoned {p_kept[add].sum()}, "
                  f"clean {(~p_kept[add]).sum()}")
        for frac in (0.02, 0.05, 0.1):
            k = int(frac * kept.sum())
            top = np.argsort(-s_kept)[:k]
            print(f"    top {frac:.0%} of the class's kept rows: poisoned {p_kept[top].sum()} of {k}")


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        pilot(arg)
