"""One mapping between the user's label strings and class ids, fixed by the training file.

It becomes the model's `id2label`, so exported models speak the user's labels. Integer-looking labels
("0", "1", JSON 1) keep their numeric order, so 0..K-1 map to themselves; anything else is sorted as
strings. "1", " 1" and "01" are the same label (canonical name "1") when all labels are integers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from core.errors import ConfigError, DataError

_INT = re.compile(r"[+-]?\d+")


def _is_int(value: str) -> bool:
    return _INT.fullmatch(value.strip()) is not None


@dataclass(frozen=True)
class LabelMap:
    """`names[i]` is the label string of class id i."""

    names: tuple[str, ...]
    integer: bool  # all training labels were integer-looking: compare labels numerically

    @classmethod
    def from_labels(cls, raw: Iterable[str | int]) -> LabelMap:
        """Build from the training labels (None/blank already refused by `read_table`)."""
        values = [str(v).strip() for v in raw]
        if not values:
            raise ValueError("no labels to build a label map from")
        if all(_is_int(v) for v in values):
            numbers = sorted({int(v) for v in values})
            return cls(names=tuple(str(n) for n in numbers), integer=True)
        return cls(names=tuple(sorted(set(values))), integer=False)

    @classmethod
    def from_id2label(cls, id2label: Mapping[int | str, str]) -> LabelMap:
        """Rebuild from a saved `id2label` (e.g. a model config, whose JSON keys are strings)."""
        by_id = {int(k): str(v) for k, v in id2label.items()}
        if sorted(by_id) != list(range(len(by_id))):
            raise ValueError(f"id2label ids must be 0..K-1, got {sorted(by_id)}")
        names = tuple(by_id[i] for i in range(len(by_id)))
        return cls(names=names, integer=all(_is_int(n) for n in names))

    @property
    def num_labels(self) -> int:
        return len(self.names)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}

    def canonical(self, raw: str | int) -> str:
        """The form a raw label is looked up by: "01" -> "1" for integer maps, stripped otherwise."""
        value = str(raw).strip()
        if self.integer and _is_int(value):
            return str(int(value))
        return value

    def lookup(self, raw: str | int) -> int | None:
        """Class id of a raw label, None if unknown."""
        return self.label2id.get(self.canonical(raw))

    def encode(self, raw: str | int, file: str | None = None, line: int | None = None,
               role: str | None = None, field: str | None = "label") -> int:
        """Class id; DataError naming file/line/field for a label the training file never had."""
        found = self.lookup(raw)
        if found is None:
            raise DataError(f"label {str(raw).strip()!r} never seen in train (train labels: "
                            f"{', '.join(repr(n) for n in self.names)})", file, line, field, role)
        return found

    def name(self, label_id: int) -> str:
        return self.names[label_id]

    def resolve_target(self, value: str | int) -> int:
        """Target class from a label name ("1", "pos") or, failing that, a class id ("1" -> id 1).

        Names win: with labels {"1", "2"}, "1" means the label "1" (id 0), which is what a user
        looking at their own file means.
        """
        found = self.lookup(value)
        if found is not None:
            return found
        text = str(value).strip()
        if _is_int(text) and 0 <= int(text) < self.num_labels:
            return int(text)
        names = ", ".join(repr(n) for n in self.names)
        raise ConfigError(f"target label {text!r} is not a training label; choose one of {names} "
                          f"(or a class id 0..{self.num_labels - 1})")
