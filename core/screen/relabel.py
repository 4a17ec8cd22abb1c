"""Counter-examples: removed rows that read as another class go back into training with that class.

The screen finds a rewriting trigger's rows (a style, a syntactic template) only in part: it sees the
marks such a rewrite leaves on the sentence's form (punctuation written against the word, an opening
clause), which only some of its rows carry. The rest stay in the kept rows and still teach the model that
the trigger means the target label. The removed rows that carry the trigger and read as another class (a
dirty-label trigger's rows) can teach it the opposite: kept with the label their content gives, they make
the trigger say nothing about the label. The reader is the content screen's representation: a logistic
regression on the frozen sentence embeddings (and the trusted rows' words, where the content model reads
them too), fitted on the kept rows. A removed row the reader gives its
own label stays out (a clean-label trigger's rows read as their label; back in, they would teach the
trigger again).

Only the rows of a removed group (the rows one feature removed from one class) that no token of their own
explains come back. A word, phrase or character that every row of the group carries and no kept row of
its class does can be the trigger itself, found whole: back with another label they would be its only
rows, and would teach it as a cue for that label.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from typing import Any

import numpy as np

from core.screen.content import Features
from core.screen.features import is_token


def returnable(removed_on: Iterable[tuple[int, str]], features: Sequence[set[str]], labels: Sequence[int]) -> set[int]:
    """The removed rows that may come back: `removed_on` gives (row, the feature that removed it); a group
    is the rows one feature removed from one class."""
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for row, feature in removed_on:
        groups[feature, labels[row]].append(row)
    gone = {row for rows in groups.values() for row in rows}
    kept_tokens: dict[int, set[str]] = defaultdict(set)
    for i, fs in enumerate(features):
        if i not in gone:
            kept_tokens[labels[i]].update(f for f in fs if is_token(f))
    out: set[int] = set()
    for (_, label), rows in groups.items():
        shared = set.intersection(*(features[i] for i in rows))
        if not any(is_token(f) and f not in kept_tokens[label] for f in shared):
            out.update(rows)
    return out


def fit_reader(kept_x: Features, kept_labels: np.ndarray) -> Any:
    """The counter-example reader: a logistic regression on the kept rows' embeddings."""
    from sklearn.linear_model import LogisticRegression

    # balanced: the kept rows' class shares (a dirty-label trigger's leftovers among them) must not tip a
    # row whose content is in between
    return LogisticRegression(max_iter=2000, class_weight="balanced").fit(kept_x, kept_labels)


def read_labels(kept_x: Features, kept_labels: np.ndarray, removed_x: Features) -> np.ndarray:
    """The class a reader fitted on the kept rows gives each removed row."""
    if removed_x.shape[0] == 0:
        return np.zeros(0, dtype=int)
    return fit_reader(kept_x, kept_labels).predict(removed_x).astype(int)


def counter_examples(x: Features, labels: Sequence[int], removed: Collection[int],
                     candidates: Collection[int] | None = None) -> dict[int, int]:
    """Removed row -> the class it goes back into training with, for the `candidates` (default: every
    removed row) read as another class than theirs (`x`: every row as the content model reads it; the
    reader is fitted on the rows not in `removed`). Empty when the kept rows hold fewer than two classes."""
    y = np.asarray(labels)
    keep = np.ones(len(y), dtype=bool)
    keep[list(removed)] = False
    rows = sorted(removed if candidates is None else candidates)
    if len(np.unique(y[keep])) < 2 or not rows:
        return {}
    read = read_labels(x[keep], y[keep], x[rows])
    return {row: int(c) for row, c in zip(rows, read, strict=True) if c != y[row]}
