"""The job's rows once read and checked: what every stage after validation works on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.data.dataset import Example
from core.data.labels import LabelMap


@dataclass
class PreparedData:
    label_map: LabelMap
    target: int
    train: list[Example]
    aux: list[Example]
    select: list[Example]
    eval: list[Example]
    probes: dict[str, list[Example]]
    sources: dict[str, str]  # where select/eval rows came from, as written into metrics.json
    sha256: dict[str, str] = field(default_factory=dict)
    select_from_aux: bool = False  # select is a slice of the aux file (no --select file)

    @property
    def trusted(self) -> list[Example]:
        """The rows of the user's trusted aux file (its select slice included)."""
        return [*self.aux, *self.select] if self.select_from_aux else list(self.aux)

    def summary(self) -> dict[str, Any]:
        return {
            "labels": self.label_map.id2label,
            "target_label": self.label_map.id2label[self.target],
            "rows": {"train": len(self.train), "aux": len(self.aux), "select": len(self.select),
                     "eval": len(self.eval), **{f"probe:{k}": len(v) for k, v in self.probes.items()}},
            "sources": self.sources,
        }
