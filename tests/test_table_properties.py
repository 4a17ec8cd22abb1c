"""Property tests of the file readers: whatever bytes arrive, `read_table` returns rows or refuses with a
DataError that names the file (and a line where it has one): never another exception, never a hang."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.data.labels import LabelMap
from core.data.table import read_table
from core.errors import DataError

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
CELL = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)  # any text, NUL and quotes too
SUFFIXES = (".tsv", ".csv", ".jsonl")


def check(path: Path, require_label: bool = True) -> None:
    try:
        rows = read_table(path, require_label=require_label)
    except DataError as exc:
        assert exc.file == str(path) and str(exc)
        assert exc.line is None or exc.line >= 1
        return
    assert rows and all(isinstance(r.text, str) and r.text.strip() for r in rows)
    assert all(r.line >= 1 for r in rows) and [r.line for r in rows] == sorted(r.line for r in rows)
    if require_label:
        labels = LabelMap.from_labels([r.label for r in rows if r.label is not None])
        assert len(labels.id2label) >= 1


@SETTINGS
@given(data=st.binary(max_size=400), suffix=st.sampled_from(SUFFIXES))
def test_arbitrary_bytes(tmp_path: Path, data: bytes, suffix: str) -> None:
    path = tmp_path / f"f{suffix}"
    path.write_bytes(data)
    check(path)


@SETTINGS
@given(header=st.lists(st.sampled_from(["text", "label", "orig_label", "poisoned", "text", "x", ""]), max_size=5),
       rows=st.lists(st.lists(CELL, max_size=6), max_size=8), delimiter=st.sampled_from([",", "\t"]),
       bom=st.booleans(), crlf=st.booleans())
def test_ragged_quoted_and_odd_delimited_files(tmp_path: Path, header: list[str], rows: list[list[str]],
                                               delimiter: str, bom: bool, crlf: bool) -> None:
    newline = "\r\n" if crlf else "\n"
    body = newline.join(delimiter.join(r) for r in [header, *rows])
    path = tmp_path / ("f.tsv" if delimiter == "\t" else "f.csv")
    path.write_bytes(("\ufeff" if bom else "").encode() + body.encode("utf-8", "surrogatepass"))
    check(path)
    check(path, require_label=False)


@SETTINGS
@given(records=st.lists(st.one_of(
    st.dictionaries(st.sampled_from(["text", "label", "orig_label", "other"]),
                    st.one_of(CELL, st.integers(), st.floats(allow_nan=True), st.booleans(), st.none(),
                              st.lists(st.integers(), max_size=2)), max_size=4),
    st.integers(), st.text(max_size=10), st.lists(st.integers(), max_size=2)), max_size=6))
def test_json_lines_of_any_shape(tmp_path: Path, records: list[object]) -> None:
    path = tmp_path / "f.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    check(path)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_a_single_50_mb_line_is_refused_or_read_without_error(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"big{suffix}"
    line = "x" * (50 * 1024 * 1024)
    path.write_text(f"text\tlabel\n{line}\t1\n" if suffix == ".tsv" else f"text,label\n{line},1\n"
                    if suffix == ".csv" else json.dumps({"text": line, "label": 1}) + "\n")
    rows = read_table(path)
    assert len(rows) == 1 and len(rows[0].text) == len(line)
