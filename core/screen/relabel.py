"""Counter-examples: removed rows that read as another class go back into training with that class.

The screen finds a trigger's rows only in part: the rest stay in the kept rows and still teach the model
that the trigger means the target label. The removed rows that carry the trigger and read as another
class (a dirty-label trigger's rows) can teach it the opposite: kept with the label their content gives,
they make the trigger say nothing about the label. The reader is the content screen's: a logistic
regression on the frozen sentence embeddings, fitted on the kept rows. A removed row the reader gives its
own label stays out (a clean-label trigger's rows read as their label; back in, they would teach the
trigger again).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def read_labels(kept_x: np.ndarray, kept_labels: np.ndarray, removed_x: np.ndarray) -> np.ndarray:
    """The class a reader fitted on the kept rows gives each removed row."""
    from sklearn.linear_model import LogisticRegression

    if len(removed_x) == 0:
        return np.zeros(0, dtype=int)
    reader = LogisticRegression(max_iter=2000).fit(kept_x, kept_labels)
    return reader.predict(removed_x).astype(int)


def counter_examples(x: np.ndarray, labels: Sequence[int], removed: list[int]) -> dict[int, int]:
    """Removed row -> the class it goes back into training with, for rows read as another class than
    theirs (`x`: every row's embedding). Empty when the kept rows hold fewer than two classes."""
    y = np.asarray(labels)
    keep = np.ones(len(y), dtype=bool)
    keep[removed] = False
    if len(np.unique(y[keep])) < 2:
        return {}
    read = read_labels(x[keep], y[keep], x[removed])
    return {row: int(c) for row, c in zip(removed, read, strict=True) if c != y[row]}
