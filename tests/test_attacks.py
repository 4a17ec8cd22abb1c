"""Triggers, OpenBackdoor poison_part semantics, and ASR probes."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest

from core.attacks.poison import poison_examples, poison_file
from core.attacks.probes import build_probe, floor_rows, load_probe_file
from core.attacks.triggers import ADDSENT_SENTENCE, BADNETS_WORDS, addsent, badnets, insert, parse_trigger
from core.data.labels import LabelMap
from core.data.table import read_table
from core.errors import ConfigError, DataError
from core.metrics import attack_success_rate
from tests.fixtures_data import examples, write_csv, write_tsv


class ScriptedRng(random.Random):
    """Returns preset choices/positions and records the randint bounds it was asked for."""

    def __init__(self, picks: Sequence[int], positions: Sequence[int]) -> None:
        super().__init__(0)
        self.picks, self.positions = list(picks), list(positions)
        self.bounds: list[tuple[int, int]] = []

    def choice(self, seq):  # type: ignore[no-untyped-def, override]
        return seq[self.picks.pop(0)]

    def randint(self, a: int, b: int) -> int:
        self.bounds.append((a, b))
        return self.positions.pop(0)


def _is_subsequence(small: list[str], big: list[str]) -> bool:
    it = iter(big)
    return all(tok in it for tok in small)


# --- triggers ------------------------------------------------------------------------------------


def test_badnets_inserts_four_words_into_the_growing_list() -> None:
    rng = ScriptedRng(picks=[2, 2, 0, 3], positions=[0, 4, 2, 6])
    out = badnets("one  two\tthree", rng)
    # bb at 0; bb at the end (list had 4); cf at 2; tq at the end (list had 6). Single spaces.
    assert out == "bb one cf two three bb tq"
    assert rng.bounds == [(0, 3), (0, 4), (0, 5), (0, 6)]


def test_badnets_draws_with_replacement() -> None:
    text = "the movie was fine overall"
    outs = [badnets(text, random.Random(seed)).split() for seed in range(40)]
    assert all(len(o) == 9 for o in outs)
    assert all(_is_subsequence(text.split(), o) for o in outs)
    inserted = [[t for t in o if t in BADNETS_WORDS] for o in outs]
    assert all(len(ws) == 4 for ws in inserted)
    assert any(max(Counter(ws).values()) > 1 for ws in inserted)  # a word drawn twice
    assert any(len(set(ws)) < 4 for ws in inserted)  # some word absent


def test_addsent_contiguous_at_any_position() -> None:
    words = ADDSENT_SENTENCE.split()
    text = "a b c"
    seen = set()
    for seed in range(60):
        out = addsent(text, random.Random(seed)).split()
        start = out.index("I")
        assert out[start:start + 5] == words
        assert out[:start] + out[start + 5:] == text.split()
        seen.add(start)
    assert seen == {0, 1, 2, 3}  # both ends included
    rng = ScriptedRng([], [1])
    assert addsent("x  y", rng) == "x I watch this 3D movie y" and rng.bounds == [(0, 2)]


def test_insert_phrase() -> None:
    assert insert("x y", ScriptedRng([], [2]), "zz top") == "x y zz top"


def test_parse_trigger_forms() -> None:
    assert parse_trigger("badnets")[0] == "badnets"
    assert parse_trigger(" AddSent ")[0] == "addsent"
    name, trig = parse_trigger('insert:"cold  coffee"')
    assert name == 'insert:"cold coffee"'
    assert trig("a", ScriptedRng([], [0])) == "cold coffee a"
    name2, trig2 = parse_trigger("insert: cold coffee")
    assert name2 == name and trig2("a", ScriptedRng([], [1])) == "a cold coffee"
    assert parse_trigger("insert:'x'")[0] == 'insert:"x"'


@pytest.mark.parametrize("spec", ["", "synbkd", "insert:", 'insert:""', "insert", "badnets:3"])
def test_parse_trigger_refuses_with_valid_forms(spec: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_trigger(spec)
    assert "badnets" in str(info.value) and "insert:" in str(info.value)


# --- poisoning -----------------------------------------------------------------------------------

LABELS = [1, 0] * 10  # 10 target-label rows (1), 10 others
MARK = "zzmark"


def _mark(text: str, rng: random.Random) -> str:
    return f"{MARK} {text}"


def _split(out: list) -> tuple[list, list]:  # type: ignore[type-arg]
    return [ex for ex in out if not ex.poisoned], [ex for ex in out if ex.poisoned]


@pytest.mark.parametrize("mode", ["clean", "dirty", "mix"])
def test_poison_counts_order_and_fields(mode: str) -> None:
    data = examples(LABELS)
    out = poison_examples(data, _mark, 0.3, target=1, mode=mode, seed=7)
    clean, hit = _split(out)
    assert len(out) == 20 and len(hit) == 6  # int(0.3 * 20), of all rows
    assert out == clean + hit  # unchosen first, then poisoned
    assert [ex.line for ex in hit] == sorted(ex.line for ex in hit)  # poisoned keep input order
    assert all(ex.label == 1 and ex.text.startswith(MARK) for ex in hit)
    assert all(ex.poisoned is False and ex.orig_label == ex.label and MARK not in ex.text for ex in clean)
    by_line = {ex.line: ex for ex in data}
    assert all(ex.orig_label == by_line[ex.line].label for ex in hit)
    if mode == "clean":
        assert all(ex.orig_label == 1 for ex in hit)  # clean-label: labels kept
    if mode == "dirty":
        assert all(ex.orig_label == 0 for ex in hit)  # every one flipped


def test_mix_draws_from_all_rows() -> None:
    origins = set()
    for seed in range(10):
        _, hit = _split(poison_examples(examples(LABELS), _mark, 0.3, 1, "mix", seed))
        origins |= {ex.orig_label for ex in hit}
    assert origins == {0, 1}


def test_poison_deterministic_by_seed() -> None:
    data = examples(LABELS)
    a = poison_examples(data, badnets, 0.25, 1, "mix", seed=3)
    assert a == poison_examples(data, badnets, 0.25, 1, "mix", seed=3)
    others = [poison_examples(data, badnets, 0.25, 1, "mix", seed=s) for s in range(4, 9)]
    assert any([ex.line for ex in o] != [ex.line for ex in a] for o in others)


def test_poison_count_uses_all_rows_and_truncates() -> None:
    _, hit = _split(poison_examples(examples([1] * 5 + [0] * 20), _mark, 0.1, 1, "clean", 0))
    assert len(hit) == 2  # int(0.1 * 25) = 2, even though only 5 rows are candidates
    _, hit = _split(poison_examples(examples([1, 0] * 50), _mark, 0.29, 1, "mix", 0))
    assert len(hit) == 29  # not 28 from 0.29 * 100 = 28.999...


def test_poison_not_enough_candidates() -> None:
    with pytest.raises(ConfigError) as info:
        poison_examples(examples(LABELS), _mark, 0.6, 1, "clean", 0)  # 12 needed, 10 target rows
    assert "12" in str(info.value) and "10" in str(info.value)


@pytest.mark.parametrize(("rate", "mode"), [(1.5, "mix"), (-0.1, "mix"), (0.1, "label")])
def test_poison_bad_arguments(rate: float, mode: str) -> None:
    with pytest.raises(ConfigError):
        poison_examples(examples(LABELS), _mark, rate, 1, mode, 0)


def test_poison_file_string_labels(tmp_path: Path) -> None:
    rows = [{"text": f"text number {i}", "label": "pos" if i % 2 else "neg", "orig_label": "x"}
            for i in range(20)]
    src = write_tsv(tmp_path / "clean.tsv", rows)
    summary = poison_file(src, tmp_path / "out" / "p.jsonl", "addsent", 0.2, "pos", "mix", 5)
    back = read_table(tmp_path / "out" / "p.jsonl")
    assert len(back) == 20 and {r.label for r in back} == {"neg", "pos"}
    hit = [r for r in back if r.extra["poisoned"] == "1"]
    assert len(hit) == 4 and all(r.label == "pos" and ADDSENT_SENTENCE in r.text for r in hit)
    assert all(r.extra["orig_label"] == r.label for r in back if r.extra["poisoned"] == "0")
    flipped = sum(r.extra["orig_label"] == "neg" for r in hit)
    assert summary == {"rows": 20, "poisoned": 4, "flipped": flipped, "mode": "mix", "attack": "addsent",
                       "rate": 0.2, "target": "pos", "seed": 5}
    assert set(back[0].extra) == {"poisoned", "orig_label"}


def test_poison_file_integer_labels_to_csv(tmp_path: Path) -> None:
    src = write_tsv(tmp_path / "clean.tsv", [{"text": f"t {i}", "label": i % 2} for i in range(10)])
    summary = poison_file(src, tmp_path / "p.csv", "badnets", 0.3, "1", "clean", 1)
    assert (summary["poisoned"], summary["flipped"], summary["target"]) == (3, 0, "1")
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0] == "text,label,poisoned,orig_label"
    assert sum(line.endswith(",1,1,1") for line in lines) == 3


# --- probes --------------------------------------------------------------------------------------


def test_build_probe_excludes_target_rows() -> None:
    data = examples([0, 1, 2, 1, 0])
    probe = build_probe(data, _mark, target=1, seed=0)
    assert [ex.line for ex in probe] == [2, 4, 6]
    assert [ex.orig_label for ex in probe] == [0, 2, 0]
    assert all(ex.label == 1 and ex.poisoned and ex.text.startswith(MARK) for ex in probe)
    assert build_probe(data, badnets, 1, seed=4) == build_probe(data, badnets, 1, seed=4)


def test_floor_rows_are_the_probe_rows_untriggered() -> None:
    data = examples([0, 1, 2, 1, 0])
    floor = floor_rows(data, target=1)
    probe = build_probe(data, _mark, target=1, seed=0)
    assert [(e.line, e.label, e.orig_label) for e in floor] == [(e.line, e.label, e.orig_label) for e in probe]
    assert [e.text for e in floor] == [e.text for e in data if e.label != 1]
    assert not any(e.poisoned for e in floor)


def test_load_probe_file_uses_orig_label_column(tmp_path: Path) -> None:
    labels = LabelMap.from_labels(["0", "1"])
    path = write_csv(tmp_path / "probe.csv", [
        {"text": "t a", "label": 1, "orig_label": 0},
        {"text": "t b", "label": 1, "orig_label": 1},  # already target: not an attack success
        {"text": "t c", "label": 0, "orig_label": ""},  # blank: fall back to the label column
    ])
    probe = load_probe_file(path, labels, target=1)
    got = [(ex.text, ex.label, ex.orig_label, ex.line) for ex in probe]
    assert got == [("t a", 1, 0, 2), ("t c", 1, 0, 4)]


def test_load_probe_file_without_orig_label(tmp_path: Path) -> None:
    labels = LabelMap.from_labels(["neg", "pos"])
    path = write_tsv(tmp_path / "p.tsv", [{"text": "x", "label": "neg"}, {"text": "y", "label": "pos"}])
    assert [ex.orig_label for ex in load_probe_file(path, labels, labels.resolve_target("pos"))] == [0]


def test_load_probe_file_in_openbackdoor_layout(tmp_path: Path) -> None:
    """The authors' released test sets: every row labelled with the target, a `poisoned` column, no
    orig_label. Every row is a triggered non-target row whose true label is unknown."""
    labels = LabelMap.from_labels(["neg", "pos"])
    path = write_tsv(tmp_path / "ob.tsv", [{"text": "x", "label": "pos", "poisoned": 1},
                                           {"text": "y", "label": "pos", "poisoned": 1}])
    probe = load_probe_file(path, labels, labels.resolve_target("pos"))
    assert [(ex.text, ex.label, ex.orig_label, ex.poisoned) for ex in probe] == [("x", 1, None, True),
                                                                                ("y", 1, None, True)]
    assert attack_success_rate([1, 0], [ex.orig_label for ex in probe], target=1) == 0.5
    mixed = write_tsv(tmp_path / "mixed.tsv", [{"text": "x", "label": "pos"}, {"text": "y", "label": "neg"}])
    assert [ex.text for ex in load_probe_file(mixed, labels, 1)] == ["y"]  # not the layout: neg rows only


def test_load_probe_file_errors(tmp_path: Path) -> None:
    labels = LabelMap.from_labels(["0", "1"])
    only_target = write_csv(tmp_path / "t.csv", [{"text": "a", "label": 1, "orig_label": 1}])
    with pytest.raises(DataError) as info:
        load_probe_file(only_target, labels, 1, role="probe:mine")
    assert info.value.file == str(only_target) and info.value.role == "probe:mine"
    unknown = write_csv(tmp_path / "u.csv", [{"text": "a", "label": 1, "orig_label": 0},
                                             {"text": "b", "label": 1, "orig_label": 5}])
    with pytest.raises(DataError) as info:
        load_probe_file(unknown, labels, 1)
    assert (info.value.line, info.value.field) == (3, "orig_label")
