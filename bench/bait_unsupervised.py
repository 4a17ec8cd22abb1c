"""Unsupervised screens read off a bait model's representation (no seeds, no attack knowledge).

Input: the .npz files `bench/bait_pilot.py --dynamics` writes (last-layer [CLS] features of every row
after the bait epochs, the 96 aux rows' features, labels, the `poisoned` column). Per class, on the
rows that carry that label, it scores every row with the designs the literature proposes and prints
AUC against the `poisoned` column and recall at 1 / 2.5 / 5% of that class's clean rows removed:

- spectral signature (Tran et al. 2018): squared projection on the top principal direction;
- activation clustering (Chen et al. 2018): 2-means on 10 PCA components, the smaller cluster;
- CUBE (Cui et al. 2022): HDBSCAN on 10 PCA components, every row outside the largest cluster;
- trusted-distance: distance to the nearest aux rows of the same class (the aux rows are clean, so a
  region they never visit is suspect); scored by its rank among the aux rows' own leave-one-out
  distances as well, which is what a product could threshold on;
- and, for scale, a logistic regression told the truth (cross-validated): what any linear screen on this
  representation could at best do.

    .venv/bin/python bench/bait_unsupervised.py bench/runs/pilot/dyn-hiddenkiller-0.1.npz[:EPOCH] [...]

`:EPOCH` (1-based) reads that epoch's features from a multi-epoch run (`feats_by_epoch`); without it,
the last epoch's.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.cluster import HDBSCAN, KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import normalize

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.bait_signals import separability  # noqa: E402

FRRS = (0.01, 0.025, 0.05)


def recall_at(score: np.ndarray, poisoned: np.ndarray) -> list[float]:
    """Recall of the poisoned rows at each share of clean rows removed (threshold from the clean rows)."""
    clean = score[~poisoned]
    return [round(float((score[poisoned] > np.quantile(clean, 1 - f)).mean()), 3) for f in FRRS]


def spectral(x: np.ndarray) -> np.ndarray:
    xc = x - x.mean(0)
    v = np.linalg.svd(xc, full_matrices=False)[2][0]
    return (xc @ v) ** 2


def activation_clusters(z: np.ndarray, seed: int = 0) -> np.ndarray:
    lab = KMeans(2, n_init=10, random_state=seed).fit_predict(z)
    small = int(np.bincount(lab).argmin())
    return (lab == small).astype(float)


def cube(z: np.ndarray) -> np.ndarray:
    lab = HDBSCAN(min_cluster_size=max(10, len(z) // 100)).fit_predict(z)
    if (lab >= 0).sum() == 0:
        return np.zeros(len(z))
    big = int(np.bincount(lab[lab >= 0]).argmax())
    return (lab != big).astype(float)


def trusted_distance(x: np.ndarray, aux: np.ndarray, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Mean cosine distance to the k nearest aux rows, and each aux row's own (leave-one-out) value."""
    xn, an = normalize(x), normalize(aux)
    nn = NearestNeighbors(n_neighbors=min(k + 1, len(an))).fit(an)
    d_rows = nn.kneighbors(xn, n_neighbors=k)[0].mean(1)
    d_aux = nn.kneighbors(an, n_neighbors=k + 1)[0][:, 1:].mean(1)
    return d_rows, d_aux


def describe(name: str, score: np.ndarray, poisoned: np.ndarray) -> None:
    if poisoned.all() or not poisoned.any():
        print(f"    {name}: one-sided")
        return
    if set(np.unique(score)) <= {0.0, 1.0}:
        hit = score > 0
        print(f"    {name}: flags {int(hit.sum())} rows, recall {hit[poisoned].mean():.3f}, "
              f"clean flagged {hit[~poisoned].mean():.3f}")
        return
    print(f"    {name}: AUC {roc_auc_score(poisoned, score):.3f}, recall at {FRRS} clean: "
          f"{recall_at(score, poisoned)}")


def main(paths: list[str]) -> int:
    for spec in paths:
        path, _, epoch = spec.partition(":")
        d = np.load(path, allow_pickle=True)
        given, poisoned = d["given"], d["poisoned"]
        n = len(given)
        feats = d["feats_by_epoch"][int(epoch) - 1].astype(np.float32) if epoch else d["feats"]
        x = feats[:n]
        aux, aux_y = feats[n:n + len(d["aux_labels"])], d["aux_labels"]
        print(f"{spec}: {n} rows, {int(poisoned.sum())} poisoned")
        for c in np.unique(given):
            rows = given == c
            xc, pc = x[rows], poisoned[rows]
            print(f"  class {c}: {int(rows.sum())} rows, {int(pc.sum())} poisoned, {int((aux_y == c).sum())} aux")
            z = PCA(10, random_state=0).fit_transform(xc)
            describe("spectral signature", spectral(xc), pc)
            describe("activation clustering", activation_clusters(z), pc)
            describe("CUBE (HDBSCAN)", cube(z), pc)
            d_rows, d_aux = trusted_distance(xc, aux[aux_y == c])
            describe("distance to trusted rows", d_rows, pc)
            rank = (d_rows[:, None] > d_aux[None, :]).mean(1)
            if pc.any():
                separability(xc, pc)
            print(f"    share of aux beaten: clean rows with every aux beaten {(rank[~pc] == 1).mean():.3f}, "
                  f"poisoned {(rank[pc] == 1).mean() if pc.any() else float('nan'):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
