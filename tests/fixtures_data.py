"""Small data helpers other test files may import (no pytest fixtures, plain functions).

    from tests.fixtures_data import write_tsv, sentiment_rows
    path = write_tsv(tmp_path / "train.tsv", sentiment_rows(8))
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

from core.data.dataset import Example

POSITIVE = ["a warm funny film", "great acting and a clever plot", "i loved every minute",
            "a joyous delight", "beautifully shot and moving", "smart sharp and touching"]
NEGATIVE = ["a dull mess", "boring and far too long", "the plot makes no sense",
            "flat lifeless acting", "a tedious waste of time", "clumsy and forgettable"]


def sentiment_rows(n: int = 8) -> list[dict[str, object]]:
    """`n` rows alternating label 1 (positive) and 0 (negative), texts unique."""
    rows: list[dict[str, object]] = []
    for i in range(n):
        pool, label = (POSITIVE, 1) if i % 2 == 0 else (NEGATIVE, 0)
        rows.append({"text": f"{pool[(i // 2) % len(pool)]} {i}", "label": label})
    return rows


def write_delimited(path: Path, rows: Sequence[dict[str, object]], delimiter: str,
                    columns: Sequence[str] | None = None) -> Path:
    columns = list(columns or (rows[0].keys() if rows else ["text", "label"]))
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    return path


def write_csv(path: Path, rows: Sequence[dict[str, object]], columns: Sequence[str] | None = None) -> Path:
    return write_delimited(path, rows, ",", columns)


def write_tsv(path: Path, rows: Sequence[dict[str, object]], columns: Sequence[str] | None = None) -> Path:
    return write_delimited(path, rows, "\t", columns)


def write_jsonl(path: Path, rows: Sequence[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_text(path: Path, content: str | bytes) -> Path:
    """Raw content, for malformed-input tests."""
    data = content if isinstance(content, bytes) else content.encode("utf-8")
    path.write_bytes(data)  # bytes: no newline translation
    return path


def examples(labels: Sequence[int], prefix: str = "row") -> list[Example]:
    """Examples with distinct texts `"{prefix} {i} words here"` and the given labels, line = i + 2."""
    return [Example(text=f"{prefix} {i} words here", label=lab, line=i + 2) for i, lab in enumerate(labels)]
