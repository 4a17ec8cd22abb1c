"""Groups of untrusted rows that the trusted rows never visit, in a model's representation space.

Per class, the untrusted rows of that class and the trusted rows of that class are clustered together
(PCA, then k-means). A natural group of rows is visited by the trusted rows about as often as its share
of the class predicts; rows carrying a trigger the model has started to learn gather in a group of their
own that clean trusted rows do not reach. For each cluster the test is one-sided binomial: P(at most t
trusted rows | n_trusted of the class, the cluster's share s of the class's untrusted rows), with
Benjamini-Hochberg over every cluster of every class. A cluster is only flagged when it holds less than
half of its class (a trigger marks a minority).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from core.screen.lexical import benjamini_hochberg


@dataclass(frozen=True)
class Cluster:
    label: int
    rows: tuple[int, ...]  # indices into the untrusted rows
    share: float  # of the class's untrusted rows
    trusted: int  # trusted rows of the class in the cluster
    trusted_of_class: int
    p_value: float
    flagged: bool = False


def cluster_class(features: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    n = len(features)
    dims = max(1, min(10, n - 1, features.shape[1]))
    reduced = PCA(n_components=dims, random_state=seed).fit_transform(features)
    return KMeans(n_clusters=min(k, n), n_init=4, random_state=seed).fit_predict(reduced)


def absent_clusters(untrusted: np.ndarray, labels: Sequence[int], trusted: np.ndarray,
                    trusted_labels: Sequence[int], k: int, fdr: float, seed: int = 0) -> list[Cluster]:
    """Every cluster of every class with its test; `flagged` marks those the trusted rows avoid."""
    y = np.asarray(labels)
    ty = np.asarray(trusted_labels)
    found: list[Cluster] = []
    for c in np.unique(y):
        mine = np.flatnonzero(y == c)
        theirs = np.flatnonzero(ty == c)
        if len(theirs) == 0 or len(mine) < 2 * k:
            continue
        assign = cluster_class(np.vstack([untrusted[mine], trusted[theirs]]), k, seed)
        ours, trusted_assign = assign[: len(mine)], assign[len(mine):]
        for cid in np.unique(ours):
            members = mine[ours == cid]
            share = len(members) / len(mine)
            t = int((trusted_assign == cid).sum())
            p = float(stats.binom.cdf(t, len(theirs), share))
            found.append(Cluster(int(c), tuple(int(i) for i in members), share, t, len(theirs), p))
    hits = benjamini_hochberg([cl.p_value for cl in found], fdr) if found else []
    return [Cluster(cl.label, cl.rows, cl.share, cl.trusted, cl.trusted_of_class, cl.p_value,
                    flagged=hit and cl.share < 0.5) for cl, hit in zip(found, hits, strict=True)]
