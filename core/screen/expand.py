"""Seed and expand: rows like the ones the lexical screen confirmed, found by what else they share.

A paraphrase trigger (a writing style, a syntactic template) leaves many weak marks, of which the purity
test confirms only the strongest (glued punctuation, one opening clause). Its rows still share the weak
ones. The rows removed on `absent` suspects (confirmed against the trusted rows) are the seed. Per seed
class, a logistic regression on the rows' features, minus the suspects' own features, learns seed rows
against that class's other untrusted rows; every row is scored by a model that did not train on it
(`folds`-fold cross-fitting), and each fold model also scores the trusted rows of the class. A row is
added when it scores above every trusted row of its class under the same model: if the trusted rows are
exchangeable with the clean untrusted ones, a clean row does so with probability at most
1 / (trusted rows of the class + 1). At most as many rows as the seed are added (a trigger marks a
minority; an expansion that runs away is a natural group, not the trigger).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Expansion:
    label: int
    seed: int  # seed rows of the class
    threshold: float  # the highest trusted score of the class, over the fold models
    added: dict[int, float]  # row -> its score's margin over its fold model's highest trusted score


def _vectors(features: Sequence[set[str]], drop: set[str]):  # noqa: ANN202 - a scipy sparse matrix
    from sklearn.feature_extraction import FeatureHasher

    hasher = FeatureHasher(n_features=2**18, input_type="string", alternate_sign=False)
    return hasher.transform([sorted(fs - drop) for fs in features])


def expand_seed(features: Sequence[set[str]], labels: Sequence[int], removed: set[int], seed_rows: set[int],
                seed_features: set[str], trusted_features: Sequence[set[str]], trusted_labels: Sequence[int],
                folds: int = 5, random_state: int = 0) -> list[Expansion]:
    """Rows to add per seed class (indices into `features`, never already in `removed`)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    out: list[Expansion] = []
    y_all = np.asarray(labels)
    for c in sorted({labels[i] for i in seed_rows}):
        seed = sorted(i for i in seed_rows if labels[i] == c)
        pool = [i for i in np.flatnonzero(y_all == c) if i not in removed or i in seed_rows]
        trusted = [j for j, y in enumerate(trusted_labels) if y == c]
        if len(seed) < folds or len(pool) - len(seed) < folds or not trusted:
            continue
        x = _vectors([features[i] for i in pool], seed_features)
        target = np.array([i in seed_rows for i in pool])
        xt = _vectors([trusted_features[j] for j in trusted], seed_features)
        margin = np.zeros(len(pool))  # score minus the same model's highest trusted score
        thresholds = []
        splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=random_state)
        for fit, held in splits.split(np.zeros(len(pool)), target):
            model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000)
            model.fit(x[fit], target[fit])
            thresholds.append(float(model.decision_function(xt).max()))
            margin[held] = model.decision_function(x[held]) - thresholds[-1]
        candidates = sorted(((float(m), i) for m, i in zip(margin, pool, strict=True)
                             if m > 0 and i not in removed), reverse=True)[: len(seed)]
        out.append(Expansion(c, len(seed), max(thresholds), {i: m for m, i in candidates}))
    return out
