"""Accuracy and ASR definitions on hand-made examples."""

from __future__ import annotations

import numpy as np
import pytest

from core.metrics import accuracy, attack_success_rate


def test_accuracy() -> None:
    assert accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5
    assert accuracy(np.array([2, 2]), np.array([2, 2])) == 1.0


def test_asr_excludes_rows_whose_orig_label_is_target() -> None:
    preds = [1, 1, 0, 1, 1, 2]
    orig = [0, 1, 0, 2, 1, 0]
    # Rows with orig != 1: indices 0, 2, 3, 5 -> preds 1, 0, 1, 2 -> 2 of 4 hit the target.
    # Counting all rows would give 4/6; the target-label rows (1, 4) must not count.
    assert attack_success_rate(preds, orig, target=1) == 0.5
    assert attack_success_rate(np.array(preds), np.array(orig), 1) == 0.5


def test_asr_accepts_tensors() -> None:
    torch = pytest.importorskip("torch")
    assert attack_success_rate(torch.tensor([1, 0, 1]), torch.tensor([0, 0, 0]), 1) == pytest.approx(2 / 3)


def test_empty_and_mismatched_inputs_raise() -> None:
    with pytest.raises(ValueError):
        accuracy([], [])
    with pytest.raises(ValueError):
        attack_success_rate([], [], 1)
    with pytest.raises(ValueError):
        attack_success_rate([1, 1], [1, 1], 1)  # nothing left once target rows are excluded
    with pytest.raises(ValueError):
        accuracy([1, 0], [1])
    with pytest.raises(ValueError):
        accuracy([[0.1, 0.9]], [1])  # logits, not class ids
