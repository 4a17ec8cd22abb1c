"""CACC and ASR as fractions (docs/reference-implementation.md §5).

Inputs may be lists, numpy arrays or torch tensors.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# Per-epoch monitor beside the probes: clean non-target eval rows relabelled as the target, so its
# "accuracy" is the share already called the target, the floor each epoch's ASR must be read against.
FLOOR_MONITOR = "asr_floor"


def _ints(values: Any, name: str) -> list[int]:
    """1-D ints from a list, ndarray or tensor (anything with `tolist`), without importing torch."""
    if hasattr(values, "tolist"):
        values = values.tolist()
    if not isinstance(values, Iterable):
        raise ValueError(f"{name} must be a sequence of class ids")
    out = []
    for v in values:
        if isinstance(v, (list, tuple)):
            raise ValueError(f"{name} must be one-dimensional (class ids, not logits)")
        out.append(int(v))
    return out


def _pair(preds: Any, labels: Any, label_name: str) -> tuple[list[int], list[int]]:
    p, y = _ints(preds, "preds"), _ints(labels, label_name)
    if len(p) != len(y):
        raise ValueError(f"preds has {len(p)} rows but {label_name} has {len(y)}")
    if not p:
        raise ValueError("no rows to score")
    return p, y


def accuracy(preds: Any, labels: Any) -> float:
    """Fraction of rows with pred == label (CACC on a clean set)."""
    p, y = _pair(preds, labels, "labels")
    return sum(a == b for a, b in zip(p, y, strict=True)) / len(p)


def attack_success_rate(preds: Any, orig_labels: Any, target: int) -> float:
    """Among rows whose original label != target, the fraction predicted as target. Rows already
    labelled target are excluded: predicting target there is not evidence of a backdoor. An original
    label of None is unknown but not the target (a probe file in OpenBackdoor's layout)."""
    if not hasattr(orig_labels, "tolist"):
        orig_labels = [-1 if v is None else v for v in orig_labels]
    p, y = _pair(preds, orig_labels, "orig_labels")
    hits = [pred == target for pred, orig in zip(p, y, strict=True) if orig != target]
    if not hits:
        raise ValueError(f"no rows whose original label differs from the target {target}")
    return sum(hits) / len(hits)
