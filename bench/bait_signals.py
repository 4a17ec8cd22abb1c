"""Signals read off a bait model's training run (`bench/bait_pilot.py --dynamics` writes the .npz files).

For each attack: SEEP's seeding signal (mean over epochs of 1 / (1 - p(given label)), in-sample) against
the `poisoned` column; how well the bait model's last-layer [CLS] features separate poisoned from clean
target rows at all (a cross-validated logistic regression told the truth: an upper bound, not a screen);
and seed-and-expand: the rows the lexical screen removed (`muscle screen ... --out DIR`) as seeds, a
positive-unlabelled logistic regression (seeds against the other target rows, cross-fitted) on the
standardised features, grown for a few rounds by adding the rows it scores above 0. Reading:
bench/notes/screen-study.md section 5.

    .venv/bin/python bench/bait_signals.py bench/runs/pilot/dyn-hiddenkiller-0.1.npz /tmp/scr-hk/screen.json
"""

from __future__ import annotations

import json
import sys

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_predict
from sklearn.preprocessing import StandardScaler

FRRS = (0.01, 0.025, 0.05)


def recall_at(score: np.ndarray, poisoned: np.ndarray) -> list[float]:
    """Recall of the poisoned rows at each share of clean rows removed (threshold from the clean rows)."""
    return [round(float((score[poisoned] > np.quantile(score[~poisoned], 1 - f)).mean()), 3) for f in FRRS]


def seep_seeding(conf: np.ndarray, given: np.ndarray, poisoned: np.ndarray) -> None:
    target = given == 1
    for epochs in range(1, conf.shape[0] + 1):
        mu = (1 / (1 - np.clip(conf[:epochs], 0, 1 - 1e-7))).mean(0)
        order = np.where(target)[0][np.argsort(-mu[target])]
        print(f"  SEEP mu over {epochs} epoch(s): AUC {roc_auc_score(poisoned[target], mu[target]):.3f}, "
              f"precision of the top 100 / 400: "
              f"{poisoned[order[:100]].mean():.2f} / {poisoned[order[:400]].mean():.2f}")


def separability(x: np.ndarray, poisoned: np.ndarray) -> None:
    s = cross_val_predict(LogisticRegression(C=1, max_iter=3000), x, poisoned, cv=5, method="predict_proba")[:, 1]
    print(f"  told the truth (upper bound): AUC {roc_auc_score(poisoned, s):.3f}, recall at {FRRS} clean: "
          f"{recall_at(s, poisoned)}")


def pu_scores(x: np.ndarray, seeds: np.ndarray, rest: np.ndarray, c: float) -> np.ndarray:
    out = np.zeros(len(rest))
    fold = np.arange(len(rest)) % 5
    for f in range(5):
        fit = fold != f
        lr = LogisticRegression(C=c, max_iter=3000, class_weight="balanced")
        lr.fit(np.concatenate([x[seeds], x[rest[fit]]]), np.r_[np.ones(len(seeds)), np.zeros(fit.sum())])
        out[~fit] = lr.decision_function(x[rest[~fit]])
    return out


def seed_and_expand(x: np.ndarray, given: np.ndarray, poisoned: np.ndarray, seeds: set[int], c: float,
                    rounds: int = 3) -> None:
    target = np.where(given == 1)[0]
    clean_rows = int((~poisoned).sum())
    for r in range(rounds + 1):
        rest = np.array([i for i in target if i not in seeds])
        s = pu_scores(x, np.array(sorted(seeds)), rest, c)
        chosen = np.array(sorted(seeds))
        print(f"  C={c} round {r}: {len(seeds)} rows removed, recall {poisoned[chosen].sum() / poisoned.sum():.3f}, "
              f"clean removed {(~poisoned[chosen]).sum() / clean_rows:.3f}; on the rest AUC "
              f"{roc_auc_score(poisoned[rest], s):.3f}, recall at {FRRS} clean: {recall_at(s, poisoned[rest])}")
        seeds = seeds | set(rest[s > 0].tolist())


def main(npz: str, screen_json: str) -> int:
    d = np.load(npz, allow_pickle=True)
    given, poisoned = d["given"], d["poisoned"]
    x = d["feats"][:len(given)]
    print(f"{npz}: {len(given)} rows, {poisoned.sum()} poisoned")
    seep_seeding(d["conf"], given, poisoned)
    target = given == 1
    separability(x[target], poisoned[target])
    seeds = {r["row"] for r in json.loads(open(screen_json).read())["removed"]}
    for c in (0.001, 0.01):
        seed_and_expand(StandardScaler().fit_transform(x), given, poisoned, seeds, c)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1], sys.argv[2]))
