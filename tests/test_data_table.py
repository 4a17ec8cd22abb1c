"""Reading tables: formats, line bookkeeping, and every bad-input error naming file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.data.dataset import Example, check_aux, load_examples, stratified_split
from core.data.labels import LabelMap
from core.data.table import read_table, write_table
from core.errors import ConfigError, DataError
from tests.fixtures_data import examples, write_csv, write_jsonl, write_text, write_tsv


def _error(path: Path, **kwargs: object) -> DataError:
    with pytest.raises(DataError) as info:
        read_table(path, **kwargs)  # type: ignore[arg-type]
    return info.value


def _assert_at(err: DataError, path: Path, line: int | None, field: str | None) -> None:
    assert err.file == str(path)
    assert err.line == line
    assert err.field == field
    assert str(path) in str(err)
    if line is not None:
        assert f"line {line}" in str(err)
    if field is not None:
        assert repr(field) in str(err)


# --- reading -------------------------------------------------------------------------------------


def test_tsv_rows_lines_and_extra_columns(tmp_path: Path) -> None:
    path = write_tsv(tmp_path / "t.tsv", [
        {"text": "good film", "label": 1, "poisoned": 1, "orig_label": 0},
        {"text": "bad film", "label": 0, "poisoned": 0, "orig_label": 0},
    ])
    rows = read_table(path, role="train")
    assert [(r.text, r.label, r.line) for r in rows] == [("good film", "1", 2), ("bad film", "0", 3)]
    assert rows[0].extra == {"poisoned": "1", "orig_label": "0"}


def test_tsv_reads_csv_style_quotes(tmp_path: Path) -> None:
    # The shared data is written by Python csv with a tab delimiter: a tab inside a field is quoted.
    path = write_text(tmp_path / "q.tsv", 'text\tlabel\n"has\ta tab"\t1\nplain\t0\n')
    rows = read_table(path)
    assert [r.text for r in rows] == ["has\ta tab", "plain"]


def test_csv_multiline_record_reports_start_line(tmp_path: Path) -> None:
    path = write_text(tmp_path / "m.csv", 'text,label\n"first\nsecond\nthird",1\n\nnext,\n')
    with pytest.raises(DataError) as info:
        read_table(path)
    # Record 1 spans lines 2-4, a blank line 5, the bad record starts on line 6.
    _assert_at(info.value, path, 6, "label")
    rows = read_table(path, require_label=False)
    assert [r.line for r in rows] == [2, 6]
    assert rows[0].text == "first\nsecond\nthird"
    assert rows[1].label is None


def test_configurable_columns_and_bom(tmp_path: Path) -> None:
    path = write_text(tmp_path / "c.csv", "\ufeffsentence,y,id\nhello there,pos,7\n")
    rows = read_table(path, text_column="sentence", label_column="y")
    assert rows[0].text == "hello there" and rows[0].label == "pos" and rows[0].extra == {"id": "7"}


def test_jsonl_label_types_and_extras(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "j.jsonl", [
        {"text": "a", "label": 1, "poisoned": True, "orig_label": 0},
        {"text": "b", "label": "1"},
        {"text": "c", "label": 0.0},
    ])
    rows = read_table(path)
    assert [r.label for r in rows] == ["1", "1", "0"]
    assert rows[0].extra == {"poisoned": "1", "orig_label": "0"}


def test_json_extension_and_blank_lines(tmp_path: Path) -> None:
    path = write_text(tmp_path / "j.json", '{"text": "a", "label": "x"}\n\n{"text": "b", "label": "y"}\n')
    assert [r.line for r in read_table(path)] == [1, 3]


def test_write_table_round_trip_every_format(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [{"text": 'comma, "quote"\tand tab', "label": "1", "poisoned": 1},
                                     {"text": "multi\nline", "label": "0", "poisoned": 0}]
    for ext in ("csv", "tsv", "jsonl"):
        path = tmp_path / f"out.{ext}"
        write_table(path, rows, ["text", "label", "poisoned"])
        back = read_table(path)
        assert [r.text for r in back] == [rows[0]["text"], rows[1]["text"]], ext
        assert [r.extra["poisoned"] for r in back] == ["1", "0"], ext
    with pytest.raises(ConfigError):
        write_table(tmp_path / "out.xlsx", rows, ["text"])


# --- bad input ------------------------------------------------------------------------------------


def test_empty_text(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "e.csv", [{"text": "ok", "label": 1}, {"text": "   ", "label": 0}])
    err = _error(path, role="aux")
    _assert_at(err, path, 3, "text")
    assert "empty text" in str(err) and err.role == "aux"


def test_missing_label_cell_and_short_row(tmp_path: Path) -> None:
    path = write_text(tmp_path / "l.tsv", "text\tlabel\nfine\t1\nno label here\n")
    err = _error(path)
    _assert_at(err, path, 3, "label")
    assert "missing label" in str(err)


def test_missing_label_in_jsonl(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "l.jsonl", [{"text": "a", "label": 1}, {"text": "b", "label": None}])
    _assert_at(_error(path), path, 2, "label")


def test_missing_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", [{"sentence": "a", "label": 1}])
    err = _error(path)
    _assert_at(err, path, 1, "text")
    assert "missing column" in str(err) and "sentence" in str(err)
    path2 = write_csv(tmp_path / "c2.csv", [{"text": "a", "y": 1}])
    _assert_at(_error(path2), path2, 1, "label")
    # No label column is fine where labels are optional.
    assert read_table(path2, require_label=False)[0].label is None


def test_tsv_read_as_csv_hints_at_extension(tmp_path: Path) -> None:
    path = write_text(tmp_path / "wrong.csv", "text\tlabel\nhi\t1\n")
    assert "tab-separated" in str(_error(path))


def test_missing_field_in_jsonl(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "m.jsonl", [{"text": "a", "label": 1}, {"txt": "b", "label": 1}])
    _assert_at(_error(path), path, 2, "text")


def test_non_utf8_reports_line_of_first_bad_byte(tmp_path: Path) -> None:
    path = write_text(tmp_path / "b.tsv", b"text\tlabel\ngood\t1\nalso good\t0\ncaf\xe9\t1\nbad \xff\t0\n")
    err = _error(path)
    _assert_at(err, path, 4, "text")  # 0xe9 (latin-1 e-acute) on line 4 comes before 0xff on line 5
    assert "UTF-8" in str(err) and "0xe9" in str(err)


def test_non_utf8_inside_multiline_csv_field(tmp_path: Path) -> None:
    path = write_text(tmp_path / "b.csv", b'text,label\n"line one\nline \xe9 two",1\n')
    _assert_at(_error(path), path, 3, "text")  # the physical line of the byte, not the record start


def test_non_utf8_in_jsonl(tmp_path: Path) -> None:
    path = write_text(tmp_path / "b.jsonl", b'{"text": "a", "label": 1}\n{"text": "b", "label": "\xfe"}\n')
    _assert_at(_error(path), path, 2, "label")


def test_malformed_json_line(tmp_path: Path) -> None:
    path = write_text(tmp_path / "m.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": 1\n')
    err = _error(path)
    _assert_at(err, path, 2, None)
    assert "malformed JSON" in str(err)
    path2 = write_text(tmp_path / "arr.jsonl", '["a", 1]\n')
    assert "JSON object" in str(_error(path2))


def test_bad_label_types_in_jsonl(tmp_path: Path) -> None:
    for value in (True, 0.5, [1]):
        path = write_jsonl(tmp_path / "t.jsonl", [{"text": "a", "label": value}])
        _assert_at(_error(path), path, 1, "label")
    path = write_jsonl(tmp_path / "n.jsonl", [{"text": 5, "label": 1}])
    _assert_at(_error(path), path, 1, "text")


@pytest.mark.parametrize("content", ["", "  \n\n", "text,label\n", "text,label\n\n"])
def test_empty_file(tmp_path: Path, content: str) -> None:
    path = write_text(tmp_path / "e.csv", content)
    err = _error(path)
    _assert_at(err, path, None, None)
    assert "empty" in str(err) or "no data rows" in str(err)


def test_empty_jsonl(tmp_path: Path) -> None:
    path = write_text(tmp_path / "e.jsonl", "\n \n")
    assert "empty" in str(_error(path))


def test_extra_fields_and_unclosed_quote(tmp_path: Path) -> None:
    path = write_text(tmp_path / "x.csv", "text,label\na,1,surprise\n")
    _assert_at(_error(path), path, 2, None)
    path2 = write_text(tmp_path / "u.csv", 'text,label\nok,1\n"never closed,1\nmore,0\n')
    err = _error(path2)
    _assert_at(err, path2, 3, None)
    assert "never be closed" in str(err)


def test_duplicate_column(tmp_path: Path) -> None:
    path = write_text(tmp_path / "d.csv", "text,label,text\na,1,b\n")
    _assert_at(_error(path), path, 1, "text")


def test_unsupported_extension_and_missing_file(tmp_path: Path) -> None:
    path = write_text(tmp_path / "data.xlsx", "text,label\n")
    assert ".xlsx" in str(_error(path))
    assert "not found" in str(_error(tmp_path / "nope.csv"))


# --- examples, aux check, split ------------------------------------------------------------------


def test_load_examples_unknown_label_names_file_line_field(tmp_path: Path) -> None:
    labels = LabelMap.from_labels(["0", "1"])
    path = write_tsv(tmp_path / "eval.tsv", [{"text": "a", "label": 1}, {"text": "b", "label": 2}])
    with pytest.raises(DataError) as info:
        load_examples(path, labels, role="eval")
    _assert_at(info.value, path, 3, "label")
    assert "never seen in train" in str(info.value) and info.value.role == "eval"


def test_load_examples_parses_orig_label_and_poisoned(tmp_path: Path) -> None:
    labels = LabelMap.from_labels(["neg", "pos"])
    path = write_csv(tmp_path / "t.csv", [{"text": "a", "label": "pos", "orig_label": "neg", "poisoned": 1},
                                          {"text": "b", "label": "neg", "orig_label": "", "poisoned": ""}])
    got = load_examples(path, labels)
    assert got == [Example("a", 1, 2, 0, True), Example("b", 0, 3, None, None)]
    bad = write_csv(tmp_path / "b.csv", [{"text": "a", "label": "pos", "poisoned": "maybe"}])
    with pytest.raises(DataError) as info:
        load_examples(bad, labels)
    _assert_at(info.value, bad, 2, "poisoned")


def test_check_aux_too_few_rows_per_class(tmp_path: Path) -> None:
    labels = LabelMap.from_labels(["0", "1", "2"])
    check_aux(examples([0, 0, 1, 1, 2, 2]), labels, 2, tmp_path / "aux.csv")
    with pytest.raises(DataError) as info:
        check_aux(examples([0, 0, 1, 1, 2]), labels, 2, tmp_path / "aux.csv")
    err = info.value
    assert "too few aux rows for class '2'" in str(err)
    assert err.file == str(tmp_path / "aux.csv") and err.role == "aux" and err.field == "label"


def test_stratified_split_holds_each_class_and_is_seeded() -> None:
    data = examples([0] * 10 + [1] * 3 + [2])
    kept, held = stratified_split(data, 0.2, seed=1)
    assert sorted(ex.label for ex in held) == [0, 0, 1]  # 2 of 10, at least 1 of 3, never the lone 2
    assert len(kept) + len(held) == len(data) and not set(kept) & set(held)
    assert [ex.line for ex in kept] == sorted(ex.line for ex in kept)  # input order kept
    assert stratified_split(data, 0.2, seed=1) == (kept, held)
    assert any(stratified_split(data, 0.2, seed=s)[1] != held for s in range(2, 8))
