"""Encoded examples, the aux-size check and the stratified split used for held-back sets."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from core.data.labels import LabelMap
from core.data.table import RawRow, read_table
from core.errors import DataError

_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f"}


@dataclass(frozen=True)
class Example:
    text: str
    label: int
    line: int | None = None  # 1-based line in the source file, for messages and per-row reports
    orig_label: int | None = None  # label before poisoning (simulation, probe files, orig_label column)
    poisoned: bool | None = None  # None: unknown (a real user's data)


def rows_to_examples(rows: Sequence[RawRow], label_map: LabelMap, file: str | None = None,
                     role: str = "train", label_column: str = "label") -> list[Example]:
    """Encode rows; optional `orig_label`/`poisoned` columns are parsed too (blank -> None)."""
    out = []
    for row in rows:
        if row.label is None:
            raise DataError("missing label", file, row.line, label_column, role)
        label = label_map.encode(row.label, file, row.line, role, label_column)
        orig_raw = row.extra.get("orig_label", "").strip()
        orig = label_map.encode(orig_raw, file, row.line, role, "orig_label") if orig_raw else None
        out.append(Example(text=row.text, label=label, line=row.line, orig_label=orig,
                           poisoned=_flag(row.extra.get("poisoned", ""), file, row.line, role)))
    return out


def _flag(raw: str, file: str | None, line: int, role: str) -> bool | None:
    value = raw.strip().lower()
    if not value:
        return None
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise DataError(f"poisoned must be 0/1 or true/false, found {raw!r}", file, line, "poisoned", role)


def load_examples(path: str | Path, label_map: LabelMap, text_column: str = "text",
                  label_column: str = "label", role: str = "eval") -> list[Example]:
    """Read and encode a labelled file; labels unseen in train are a DataError."""
    rows = read_table(path, text_column, label_column, role=role, require_label=True)
    return rows_to_examples(rows, label_map, str(path), role, label_column)


def check_aux(examples: Sequence[Example], label_map: LabelMap, min_per_class: int,
              file: str | Path | None = None, role: str = "aux", label_column: str = "label") -> None:
    """Gradient alignment needs clean rows of every class: refuse an aux file short of any."""
    counts = Counter(ex.label for ex in examples)
    for label_id, name in label_map.id2label.items():
        if counts[label_id] < min_per_class:
            raise DataError(f"too few aux rows for class {name!r}: {counts[label_id]}, need at least "
                            f"{min_per_class}", str(file) if file is not None else None, None,
                            label_column, role)


def stratified_split(examples: Sequence[Example], fraction: float, seed: int
                     ) -> tuple[list[Example], list[Example]]:
    """(kept, held): about `fraction` of each class held, at least one per class when it has two or
    more rows, and never a whole class. Both parts keep the input order; deterministic per seed."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    rng = random.Random(seed)
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        by_class[ex.label].append(i)
    held: set[int] = set()
    for label in sorted(by_class):
        idx = by_class[label]
        if len(idx) < 2:
            continue  # a single row stays in training
        n = min(len(idx) - 1, max(1, round(fraction * len(idx))))
        held.update(rng.sample(idx, n))
    kept = [ex for i, ex in enumerate(examples) if i not in held]
    return kept, [ex for i, ex in enumerate(examples) if i in held]
