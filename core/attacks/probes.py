"""ASR probe sets: triggered copies of the clean non-target eval rows, or a user's triggered file.

As in OpenBackdoor's `test-poison` (docs/reference-implementation.md §5), only rows whose true label
is not the target count: a target-label row predicted as target says nothing about the backdoor.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from core.attacks.triggers import Trigger
from core.data.dataset import Example
from core.data.labels import LabelMap
from core.data.table import RawRow, read_table
from core.errors import DataError


def build_probe(eval_examples: Sequence[Example], trigger: Trigger, target: int, seed: int) -> list[Example]:
    """Triggered copies of the eval rows whose label != target, labelled target, `orig_label` = true
    label. Empty when every eval row has the target label (the caller decides what that means)."""
    rng = random.Random(seed)
    return [Example(text=trigger(ex.text, rng), label=target, line=ex.line, orig_label=ex.label,
                    poisoned=True)
            for ex in eval_examples if ex.label != target]


def floor_rows(eval_examples: Sequence[Example], target: int) -> list[Example]:
    """`build_probe` without a trigger: the eval rows whose label != target, labelled target. A model's
    accuracy on them is the ASR floor, the share of clean rows it already puts in the target class."""
    return [Example(text=ex.text, label=target, line=ex.line, orig_label=ex.label, poisoned=False)
            for ex in eval_examples if ex.label != target]


def all_triggered_target(rows: list[RawRow], label_map: LabelMap, target: int) -> bool:
    """OpenBackdoor's layout (the authors' released test sets): every row labelled with the target and no
    `orig_label` to say otherwise. Such rows are triggered non-target rows with their label already
    flipped; their true label is unknown (orig_label None), and ASR counts them all."""
    if any(row.extra.get("orig_label", "").strip() for row in rows):
        return False
    return all(row.label is not None and row.label.strip() == label_map.name(target) for row in rows)


def load_probe_file(path: str | Path, label_map: LabelMap, target: int, text_column: str = "text",
                    label_column: str = "label", role: str = "probe") -> list[Example]:
    """A user's triggered test file. The true label is the `orig_label` column where present and
    non-blank, else the label column; rows whose true label is the target are dropped, except in
    OpenBackdoor's layout (`all_triggered_target`), where every row counts. Returns
    Examples with `label=target`, `orig_label` = true label, `poisoned=True`."""
    file = str(path)
    rows = read_table(path, text_column, label_column, role=role, require_label=False)
    if all_triggered_target(rows, label_map, target):
        return [Example(text=row.text, label=target, line=row.line, orig_label=None, poisoned=True) for row in rows]
    out = []
    for row in rows:
        orig_raw = row.extra.get("orig_label", "").strip()
        column = "orig_label" if orig_raw else label_column
        raw = orig_raw or row.label
        if raw is None:
            raise DataError(f"missing label (needs {label_column!r} or 'orig_label')", file, row.line,
                            label_column, role)
        orig = label_map.encode(raw, file, row.line, role, column)
        if orig != target:
            out.append(Example(text=row.text, label=target, line=row.line, orig_label=orig, poisoned=True))
    if not out:
        raise DataError(f"no rows whose original label differs from the target {label_map.name(target)!r}; "
                        "attack success rate is measured on those only", file, role=role)
    return out
