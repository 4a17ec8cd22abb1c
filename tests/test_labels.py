"""LabelMap: integer vs string labels, one mapping for JSON 1 and "1", target resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.data.dataset import load_examples
from core.data.labels import LabelMap
from core.data.table import read_table
from core.errors import ConfigError, DataError
from tests.fixtures_data import write_jsonl


def test_integer_labels_zero_based_keep_their_ids() -> None:
    m = LabelMap.from_labels(["1", "0", "2", "1"])
    assert m.id2label == {0: "0", 1: "1", 2: "2"}
    assert m.label2id == {"0": 0, "1": 1, "2": 2}
    assert m.num_labels == 3


def test_integer_labels_not_zero_based_use_numeric_order() -> None:
    # Numeric, not string, order: "10" after "2"; negative labels first.
    m = LabelMap.from_labels(["10", "2", "-1", "2"])
    assert m.id2label == {0: "-1", 1: "2", 2: "10"}
    assert m.encode("10") == 2


def test_string_labels_sorted_unique() -> None:
    m = LabelMap.from_labels(["pos", "neg", "neutral", "pos"])
    assert m.names == ("neg", "neutral", "pos")
    assert m.encode(" pos ") == 2


def test_mixed_labels_are_strings() -> None:
    m = LabelMap.from_labels(["1", "yes"])
    assert not m.integer and m.names == ("1", "yes")
    assert m.lookup("01") is None  # no numeric normalisation for string maps


def test_json_int_and_string_are_one_label(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": "a", "label": 1}, {"text": "b", "label": "1"},
                                              {"text": "c", "label": 0}, {"text": "d", "label": "01"}])
    rows = read_table(path)
    m = LabelMap.from_labels([r.label for r in rows if r.label is not None])
    assert m.names == ("0", "1")
    assert [m.encode(r.label or "") for r in rows] == [1, 1, 0, 1]
    assert [ex.label for ex in load_examples(path, m)] == [1, 1, 0, 1]


def test_encode_unknown_label() -> None:
    m = LabelMap.from_labels(["0", "1"])
    with pytest.raises(DataError) as info:
        m.encode("2", "eval.csv", 7, "eval")
    err = info.value
    assert (err.file, err.line, err.field, err.role) == ("eval.csv", 7, "label", "eval")
    assert "label '2' never seen in train" in str(err)


def test_resolve_target_by_name_or_id() -> None:
    ints = LabelMap.from_labels(["0", "1"])
    assert ints.resolve_target("1") == 1 and ints.resolve_target(0) == 0
    names = LabelMap.from_labels(["neg", "pos"])
    assert names.resolve_target("pos") == 1
    assert names.resolve_target("0") == 0  # not a name: a class id
    shifted = LabelMap.from_labels(["1", "2"])
    assert shifted.resolve_target("1") == 0  # the label named "1" wins over class id 1
    assert shifted.resolve_target("2") == 1


def test_resolve_target_unknown() -> None:
    m = LabelMap.from_labels(["neg", "pos"])
    with pytest.raises(ConfigError) as info:
        m.resolve_target("sports")
    assert "'neg', 'pos'" in str(info.value)
    with pytest.raises(ConfigError):
        m.resolve_target("2")  # out of id range too


def test_from_id2label_round_trip() -> None:
    m = LabelMap.from_labels(["b", "a", "c"])
    again = LabelMap.from_id2label({str(k): v for k, v in m.id2label.items()})  # JSON keys are strings
    assert again == m
    with pytest.raises(ValueError):
        LabelMap.from_id2label({0: "a", 2: "b"})


def test_empty_labels_refused() -> None:
    with pytest.raises(ValueError):
        LabelMap.from_labels([])
