"""What a screen found: the removed rows and the suspects, as metrics.json, screen.json and removed.tsv."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.screen.clusters import Cluster
from core.screen.content import ContentStep
from core.screen.expand import Expansion
from core.screen.lexical import Suspect


@dataclass(frozen=True)
class RemovedRow:
    row: int  # 0-based index of the data row in file order
    line: int | None  # line in the file (1-based, the header is line 1 for CSV/TSV)
    rule: str  # lexical | shape | content | expand | learned
    feature: str
    score: float
    text: str
    label: str
    relabelled: str = ""  # the label the row goes back into training with (a counter-example), if any


@dataclass
class ScreenReport:
    rows_in: int
    removed: list[RemovedRow]
    suspects: list[Suspect]
    settings: dict[str, Any]
    seconds: float
    # Only when the file marks its poisoned rows (a simulation): how the screen did against that column.
    truth: dict[str, Any] | None = field(default=None)
    clusters: list[Cluster] = field(default_factory=list)  # the learned screen's, when it ran
    expansions: list[Expansion] = field(default_factory=list)  # seed-and-expand, per seed class
    label_names: tuple[str, ...] | None = None  # class id -> the file's label, for reports
    content: list[ContentStep] = field(default_factory=list)  # the content screen's steps, in order
    relabel: dict[int, int] = field(default_factory=dict)  # removed row -> class it trains with (counter-examples)

    def label(self, label_id: int) -> str | int:
        return self.label_names[label_id] if self.label_names is not None else label_id

    @property
    def removed_rows(self) -> set[int]:
        return {r.row for r in self.removed}

    def summary(self, max_suspects: int = 50) -> dict[str, Any]:
        """The `metrics.screen` block: counts per rule and the strongest suspects."""
        per_rule: dict[str, int] = {}
        for r in self.removed:
            per_rule[r.rule] = per_rule.get(r.rule, 0) + 1
        out: dict[str, Any] = {
            "rows_in": self.rows_in,
            "rows_removed": len(self.removed),
            "rows_kept": self.rows_in - len(self.removed),
            "rows_relabelled": len(self.relabel),  # removed rows back in training as counter-examples
            "removed_per_rule": per_rule,
            "suspects": [suspect_dict(s, self.label(s.label)) for s in self.suspects[:max_suspects]],
            "suspects_total": len(self.suspects),
            "expansions": [{"label": self.label(e.label), "seed_rows": e.seed, "added": len(e.added),
                            "threshold": round(e.threshold, 4)} for e in self.expansions],
            "content": [{"feature": c.feature, "label": self.label(c.label), "rows": c.rows,
                         "label_rows": c.label_rows, "expected": round(c.expected, 2), "z": round(c.z, 2),
                         "p_value": c.p_value, "removed": len(c.removed)} for c in self.content],
            "clusters": [{"label": self.label(c.label), "rows": len(c.rows), "share": round(c.share, 4),
                          "trusted": c.trusted, "trusted_of_class": c.trusted_of_class, "p_value": c.p_value,
                          "flagged": c.flagged}
                         for c in self.clusters],
            "settings": self.settings,
            "seconds": round(self.seconds, 2),
        }
        if self.truth is not None:
            out.update(self.truth)
        return out

    def write(self, out_dir: Path) -> tuple[Path, Path]:
        """screen.json (summary plus every removed row's row/line/rule/score) and removed.tsv."""
        out_dir.mkdir(parents=True, exist_ok=True)
        payload = {**self.summary(max_suspects=len(self.suspects)),
                   "removed": [{"row": r.row, "line": r.line, "rule": r.rule, "feature": r.feature,
                                "score": round(r.score, 3), **({"relabelled": r.relabelled} if r.relabelled else {})}
                               for r in self.removed]}
        json_path = out_dir / "screen.json"
        json_path.write_text(json.dumps(payload, indent=2) + "\n")
        tsv_path = out_dir / "removed.tsv"
        write_removed_tsv(tsv_path, self.removed)
        return json_path, tsv_path


REMOVED_COLUMNS = ("row", "line", "rule", "feature", "score", "text", "label", "relabelled")


def write_removed_tsv(path: Path, removed: list[RemovedRow]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(REMOVED_COLUMNS)
        for r in removed:
            writer.writerow([r.row, "" if r.line is None else r.line, r.rule, r.feature, f"{r.score:.3f}",
                             r.text, r.label, r.relabelled])


def suspect_dict(s: Suspect, label_name: Any = None) -> dict[str, Any]:
    return {"feature": s.feature, "rule": s.rule, "label": label_name if label_name is not None else s.label,
            "rows": s.rows, "label_rows": s.label_rows, "purity": round(s.purity, 4),
            "ceiling": round(s.ceiling, 4), "score": round(s.score, 3), "aux_rows": s.aux_rows,
            "aux_label_rows": s.aux_label_rows, "aux_p_value": round(s.aux_p_value, 6), "verdict": s.verdict,
            "removed": s.removed}
