"""CUBE (Cui et al., 2022): poisoned rows form their own small clusters in a fitted model's feature space.

The caller passes a model already fitted to the poisoned training set (MuScleLoRA's copy uses the
victim itself after 1 epoch; upstream a separate roberta-base after 10).

1. Represent every training row by what the output layer sees (BERT pooler output, RoBERTa
   tanh(classifier.dense(CLS))): `common.penultimate_features`.
2. PCA → 20 dims (random_state 42), then UMAP → 2 dims (n_neighbors 100, min_dist 0, seed 42) when
   umap-learn is installed; without it (or with `reducer="pca"`) HDBSCAN runs on the 20 PCA dims.
3. HDBSCAN (min_samples 100, cluster_selection_epsilon 0); scikit-learn's implementation, else the
   `hdbscan` package.
4. For each true label keep its largest predicted cluster; drop the label's rows in every other
   cluster (noise −1 included) that holds fewer than 0.5 × that label's row count.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from core.defenses.baselines.bki import poison_accounting
from core.defenses.baselines.common import penultimate_features

Reducer = Literal["auto", "umap", "pca"]


def reduce_dimensions(features: np.ndarray, pca_components: int = 20, reducer: Reducer = "auto",
                      n_neighbors: int = 100, min_dist: float = 0.0,
                      seed: int = 42) -> tuple[np.ndarray, str]:
    """(embedding, what was used)."""
    from sklearn.decomposition import PCA

    x = np.asarray(features, dtype=np.float64)
    k = max(1, min(pca_components, x.shape[0], x.shape[1]))
    reduced = PCA(n_components=k, random_state=seed).fit_transform(x)
    if reducer == "pca":
        return reduced, f"pca{k}"
    try:
        from umap import UMAP  # optional: pulls numba
    except ImportError:
        if reducer == "umap":
            raise
        return reduced, f"pca{k} (umap-learn not installed)"
    nn = max(2, min(n_neighbors, x.shape[0] - 1))
    emb = UMAP(n_neighbors=nn, min_dist=min_dist, n_components=2, random_state=seed,
               transform_seed=seed).fit(reduced).embedding_
    return np.asarray(emb), f"pca{k}+umap2"


def cluster(embedding: np.ndarray, min_samples: int = 100, min_cluster_size: int = 5,
            epsilon: float = 0.0) -> np.ndarray:
    """HDBSCAN labels (−1 = noise). min_samples is capped below the row count for small sets."""
    n = len(embedding)
    ms = max(1, min(min_samples, n - 1))
    mcs = max(2, min(min_cluster_size, n))
    try:
        from sklearn.cluster import HDBSCAN

        kwargs = {"min_samples": ms, "min_cluster_size": mcs, "cluster_selection_epsilon": epsilon}
        try:  # copy=True: leave the caller's array alone (and silence sklearn 1.8's FutureWarning)
            model = HDBSCAN(**kwargs, copy=True)
        except TypeError:
            model = HDBSCAN(**kwargs)
    except ImportError:  # scikit-learn < 1.3
        from hdbscan import HDBSCAN as HDBSCANLib

        model = HDBSCANLib(min_samples=ms, min_cluster_size=mcs, cluster_selection_epsilon=epsilon)
    return np.asarray(model.fit_predict(embedding))


def drop_mask(labels: Sequence[int], clusters: Sequence[int], drop_scale: float = 0.5) -> np.ndarray:
    """True for rows to drop: per true label, every cluster but the largest with < drop_scale·count rows."""
    y = np.asarray(labels)
    c = np.asarray(clusters)
    drop = np.zeros(len(y), dtype=bool)
    for label in np.unique(y):
        in_label = y == label
        ids, counts = np.unique(c[in_label], return_counts=True)
        if len(ids) <= 1:
            continue
        # Largest first; on a tie the smaller cluster id is kept (deterministic, upstream's is arbitrary).
        order = sorted(zip(counts.tolist(), ids.tolist(), strict=True), key=lambda t: (-t[0], t[1]))
        for count, cid in order[1:]:
            if count < drop_scale * in_label.sum():
                drop |= in_label & (c == cid)
    return drop


def filter_training(model: Any, tokenizer: Any, examples: Sequence[Any], reducer: Reducer = "auto",
                    pca_components: int = 20, n_neighbors: int = 100, min_samples: int = 100,
                    min_cluster_size: int = 5, drop_scale: float = 0.5, seed: int = 42,
                    batch_size: int = 32, max_length: int = 512) -> tuple[list[Any], dict[str, Any]]:
    """Rows to keep (rows expose `.text` and `.label`), and a report."""
    feats = penultimate_features(model, tokenizer, [ex.text for ex in examples], batch_size, max_length)
    emb, used = reduce_dimensions(feats, pca_components, reducer, n_neighbors, 0.0, seed)
    clusters = cluster(emb, min_samples, min_cluster_size)
    drop = drop_mask([ex.label for ex in examples], clusters, drop_scale)
    kept = [ex for ex, d in zip(examples, drop, strict=True) if not d]
    removed = [ex for ex, d in zip(examples, drop, strict=True) if d]
    ids, counts = np.unique(clusters, return_counts=True)
    report: dict[str, Any] = {
        "defense": "cube", "reduction": used,
        "clusters": {str(int(i)): int(n) for i, n in zip(ids, counts, strict=True)},
        "rows_in": len(examples), "rows_kept": len(kept), "rows_removed": len(removed),
    }
    report.update(poison_accounting(examples, removed))
    return kept, report
