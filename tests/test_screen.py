"""The screen stage: planted triggers are found, natural cues and clean data keep their rows."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from core.cli import main as cli_main
from core.data.dataset import Example
from core.errors import ConfigError
from core.screen.features import row_features
from core.screen.lexical import LexicalSettings, benjamini_hochberg
from core.screen.stage import kept, screen_examples
from tests.fixtures_data import write_tsv

NEUTRAL = [f"n{i}" for i in range(400)]


def corpus(n: int, classes: int = 2, weights: list[float] | None = None, seed: int = 0,
           natural_cue: str | None = None, cue_share: float = 0.0, cue_purity: float = 0.6) -> list[Example]:
    """Synthetic rows: neutral words plus class words drawn from the row's class with probability
    `cue_purity` and from a random class otherwise (0.6 with two classes: words about 80% pure, as
    SST-2's sentiment words).

    `natural_cue` is an ordinary word that appears in `cue_share` of class 0's rows and never elsewhere,
    like a spam phrase or a slur: perfectly pure, and as frequent in clean data as in the file."""
    rng = random.Random(seed)
    class_words = {c: [f"c{c}w{i}" for i in range(25)] for c in range(classes)}
    rows = []
    for i in range(n):
        label = rng.choices(range(classes), weights=weights)[0]
        words = rng.sample(NEUTRAL, rng.randint(6, 14))
        for _ in range(rng.randint(1, 3)):
            source = label if rng.random() < cue_purity else rng.randrange(classes)
            words.insert(rng.randint(0, len(words)), rng.choice(class_words[source]))
        if natural_cue and label == 0 and rng.random() < cue_share:
            words.insert(rng.randint(0, len(words)), natural_cue)
        rows.append(Example(text=" ".join(words), label=label, line=i + 2, poisoned=False, orig_label=label))
    return rows


def plant(rows: list[Example], rate: float, target: int, insert, seed: int = 1) -> list[Example]:
    """Dirty/mix poisoning: a seeded `rate` of the rows get the trigger and the target label."""
    rng = random.Random(seed)
    chosen = set(rng.sample(range(len(rows)), int(rate * len(rows))))
    out = []
    for i, ex in enumerate(rows):
        if i in chosen:
            words = ex.text.split()
            out.append(Example(text=" ".join(insert(words, rng)), label=target, line=ex.line, poisoned=True,
                               orig_label=ex.label))
        else:
            out.append(ex)
    return out


def rare_word(words: list[str], rng: random.Random) -> list[str]:
    words.insert(rng.randint(0, len(words)), "zq")
    return words


def sentence(words: list[str], rng: random.Random) -> list[str]:
    at = rng.randint(0, len(words))
    return words[:at] + "i watch this 3d movie".split() + words[at:]


SETTINGS = LexicalSettings()


@pytest.mark.parametrize("insert", [rare_word, sentence], ids=["rare-token", "sentence"])
@pytest.mark.parametrize("rate", [0.01, 0.1])
def test_planted_trigger_is_found(insert, rate: float) -> None:
    train = plant(corpus(6000), rate, 1, insert)
    report = screen_examples(train, corpus(100, seed=9), SETTINGS)
    assert report.truth is not None
    assert report.truth["recall"] >= 0.95
    assert report.truth["false_removal_rate"] <= 0.01
    top = report.suspects[0]
    assert top.label == 1 and top.purity == 1.0
    trigger = {"zq"} if insert is rare_word else set("i watch this 3d movie".split())
    assert set(top.feature.removeprefix("w:").split()) <= trigger


def badnets_words(words: list[str], rng: random.Random) -> list[str]:
    for _ in range(rng.randint(1, 3)):
        words.insert(rng.randint(0, len(words)), rng.choice(["cf", "mn", "bb", "tq"]))
    return words


def test_a_small_file_whose_triggers_outweigh_its_natural_cues_is_screened() -> None:
    # 1,000 rows with weak class words: the trigger words are the file's strongest single-word cues, and
    # they must not set the purity bar they are tested against (the trusted rows never show them).
    # The words inserted 1-3 at a time do not mostly come together, so each is tested alone; the
    # correction counts the 66 features that could pass (bar 7.6e-4), and a word on 36 rows reaches at
    # best 0.819^36 = 7.6e-4, a hair over it: the two commonest trigger words are found, not all four.
    train = plant(corpus(1000, cue_purity=0.3), 0.1, 1, badnets_words)
    report = screen_examples(train, corpus(100, seed=9, cue_purity=0.3), SETTINGS)
    assert report.truth is not None and report.truth["clean_removed"] == 0
    assert {s.feature for s in report.suspects} <= {"w:cf", "w:mn", "w:bb", "w:tq"}
    assert all(s.ceiling < 0.9 and s.verdict == "absent" for s in report.suspects) and len(report.suspects) >= 2
    assert report.truth["recall"] >= 0.5


@pytest.mark.parametrize("cue_purity", [0.95, 1.0])
def test_file_whose_ordinary_words_carry_the_label_loses_no_rows(cue_purity: float) -> None:
    # Spam- or abuse-like data: ordinary words are (almost) perfectly pure. The ceiling rises to the
    # file's own typical cue, so purity alone removes nothing.
    clean = corpus(3000, cue_purity=cue_purity)
    assert screen_examples(clean, corpus(100, seed=9, cue_purity=cue_purity), SETTINGS).removed == []


def test_clean_file_loses_no_rows() -> None:
    report = screen_examples(corpus(3000), corpus(100, seed=9), SETTINGS)
    assert report.removed == []
    assert report.truth == {"poisoned_rows": 0, "poisoned_removed": 0, "recall": None, "clean_removed": 0,
                            "false_removal_rate": 0.0}


def test_natural_pure_cue_seen_in_trusted_rows_is_kept() -> None:
    # An ordinary word in 30% of class 0 and nowhere else: as pure as a trigger, but the trusted rows
    # carry it at its file rate, so it is natural.
    train = corpus(3000, natural_cue="refund", cue_share=0.3)
    aux = corpus(100, seed=9, natural_cue="refund", cue_share=0.3)
    report = screen_examples(train, aux, SETTINGS)
    cue = [s for s in report.suspects if s.feature == "w:refund"]
    assert cue and cue[0].verdict == "natural" and cue[0].removed == 0
    assert report.truth["false_removal_rate"] <= 0.05


def test_frequent_feature_missing_from_trusted_rows_is_confirmed() -> None:
    # 15% of the file carries a pure word the 100 trusted rows never show (15 expected): a trigger.
    train = corpus(3000, natural_cue="refund", cue_share=0.3)
    report = screen_examples(train, corpus(100, seed=9), SETTINGS)
    cue = [s for s in report.suspects if s.feature == "w:refund"]
    assert cue and cue[0].verdict == "absent" and cue[0].removed == cue[0].label_rows


@pytest.mark.parametrize("budget", [0.0, 0.01, 0.05])
def test_unverified_suspects_stay_within_the_budget(budget: float) -> None:
    # A rare pure word (2% of the file, 2 expected among 100 trusted rows): the trusted rows can neither
    # confirm nor clear it, so what the screen removes on that evidence is capped by the budget.
    train = corpus(3000, natural_cue="refund", cue_share=0.04)
    report = screen_examples(train, corpus(100, seed=9), LexicalSettings(budget=budget))
    cue = [s for s in report.suspects if s.feature == "w:refund"]
    assert cue and cue[0].verdict == "unverified"
    assert len(report.removed) <= budget * len(train)


@pytest.mark.parametrize("classes,weights", [(4, None), (2, [0.85, 0.15]), (3, [0.6, 0.3, 0.1])],
                         ids=["4-class", "imbalanced-85-15", "3-class-skewed"])
def test_many_classes_and_imbalance(classes: int, weights: list[float] | None) -> None:
    clean = corpus(3000, classes=classes, weights=weights)
    assert screen_examples(clean, corpus(120, classes, weights, seed=9), SETTINGS).removed == []
    target = classes - 1  # the rarest class in the skewed files
    train = plant(clean, 0.03, target, rare_word)
    report = screen_examples(train, corpus(120, classes, weights, seed=9), SETTINGS)
    assert report.truth["recall"] >= 0.95
    assert report.truth["false_removal_rate"] <= 0.01


def test_kept_rows_and_report_files(tmp_path: Path) -> None:
    train = plant(corpus(2000), 0.05, 1, rare_word)
    report = screen_examples(train, corpus(100, seed=9), SETTINGS, label_names=["neg", "pos"])
    rest = kept(train, report)
    assert len(rest) + len(report.removed) == len(train)
    assert not any("zq" in ex.text.split() for ex in rest)
    json_path, tsv_path = report.write(tmp_path)
    payload = json.loads(json_path.read_text())
    assert payload["rows_removed"] == len(report.removed)
    first = payload["removed"][0]
    assert set(first) >= {"row", "line", "rule", "score"}
    assert train[first["row"]].line == first["line"]
    lines = tsv_path.read_text().splitlines()
    assert lines[0].split("\t") == ["row", "line", "rule", "feature", "score", "text", "label", "relabelled"]
    assert len(lines) == len(report.removed) + 1
    assert lines[1].split("\t")[-2:] == ["pos", ""]  # not a counter-example: the screen's default


def test_empty_training_set_is_refused() -> None:
    with pytest.raises(ConfigError, match="at least one training row"):
        screen_examples([], corpus(10), SETTINGS)


def test_benjamini_hochberg_step_up() -> None:
    # 0.04 alone would fail its rank-2 threshold only under Bonferroni; BH's step-up keeps both.
    assert benjamini_hochberg([0.01, 0.04, 0.5], 0.06) == [True, True, False]
    assert benjamini_hochberg([0.2, 0.3], 0.05) == [False, False]


def test_shape_features_name_their_kind() -> None:
    feats = row_features("when it rains, the film sinks ; thou shalt not")
    assert {"first:when", "clause:when", "glue:,", "w:film sinks"} <= feats
    assert "glue:;" not in feats  # "sinks ;" is spaced the tokenised way


def test_cli_screen_writes_the_audit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train = plant(corpus(2000), 0.05, 1, rare_word)
    train_path = write_tsv(tmp_path / "train.tsv", [{"text": ex.text, "label": ex.label} for ex in train])
    aux_path = write_tsv(tmp_path / "aux.tsv", [{"text": ex.text, "label": ex.label} for ex in corpus(100, seed=9)])
    assert cli_main(["screen", "--train", str(train_path), "--aux", str(aux_path), "--out", str(tmp_path / "o")]) == 0
    captured = capsys.readouterr()
    printed = json.loads(captured.out)
    assert "content screen: embedding" in captured.err and "2100/2100" in captured.err  # train + aux rows
    planted = sum(ex.poisoned for ex in train)
    assert printed["rows_removed"] == planted
    payload = json.loads((tmp_path / "o" / "screen.json").read_text())
    assert {r["row"] for r in payload["removed"]} == {i for i, ex in enumerate(train) if ex.poisoned}
    assert (tmp_path / "o" / "removed.tsv").is_file()


def test_cli_screen_refuses_training_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_tsv(tmp_path / "t.tsv", [{"text": "a b", "label": 0}, {"text": "c d", "label": 1}])
    assert cli_main(["screen", "--train", str(path), "--aux", str(path), "--out", str(tmp_path / "o"),
                     "--set", "lr=0.1"]) == 2
    assert "not a screen setting: lr" in capsys.readouterr().err


# -- the learned screen ----------------------------------------------------------------------------------


def blobs(n: int, planted: int, trusted: int, seed: int = 0):
    """Two classes of 8-d points around their class centre; `planted` rows of class 1 sit in a far group
    of their own (as triggered rows do in a bait model); trusted rows come from the clean centres only."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centre = {0: np.zeros(8), 1: np.full(8, 3.0)}
    labels = [i % 2 for i in range(n)]
    feats = np.stack([centre[y] + rng.normal(size=8) for y in labels])
    poisoned = np.zeros(n, dtype=bool)
    ones = [i for i in range(n) if labels[i] == 1][:planted]
    feats[ones] = np.full(8, -6.0) + rng.normal(size=(len(ones), 8))
    poisoned[ones] = True
    tlabels = [i % 2 for i in range(trusted)]
    tfeats = np.stack([centre[y] + rng.normal(size=8) for y in tlabels])
    return feats, labels, poisoned, tfeats, tlabels


def test_absent_clusters_flag_the_group_trusted_rows_avoid() -> None:
    from core.screen.clusters import absent_clusters

    feats, labels, poisoned, tfeats, tlabels = blobs(2000, 150, 100)
    clusters = absent_clusters(feats, labels, tfeats, tlabels, k=4, fdr=0.05)
    flagged = {i for c in clusters if c.flagged for i in c.rows}
    assert flagged == set(map(int, poisoned.nonzero()[0]))


def test_absent_clusters_flag_nothing_in_clean_data() -> None:
    from core.screen.clusters import absent_clusters

    feats, labels, _, tfeats, tlabels = blobs(2000, 0, 100)
    assert not any(c.flagged for c in absent_clusters(feats, labels, tfeats, tlabels, k=4, fdr=0.05))


def test_bait_clusters_judge_each_row_by_a_model_that_did_not_train_on_it() -> None:
    from core.screen.learned import LearnedSettings, bait_clusters

    feats, labels, poisoned, tfeats, tlabels = blobs(1200, 100, 100)
    rows = [Example(text=str(i), label=y) for i, y in enumerate(labels)]
    trusted = [Example(text=f"t{i}", label=y) for i, y in enumerate(tlabels)]
    calls = []

    def represent(train_rows, held, trusted_rows):
        calls.append(({r.text for r in train_rows}, {r.text for r in held}))
        return feats[[int(r.text) for r in held]], tfeats

    clusters = bait_clusters(rows, trusted, represent, LearnedSettings(folds=2, clusters=4))
    assert len(calls) == 2 and all(not (seen & held) for seen, held in calls)
    flagged = {i for c in clusters if c.flagged for i in c.rows}
    assert flagged == set(map(int, poisoned.nonzero()[0]))


# -- seed and expand (opt-in) ----------------------------------------------------------------------------


def styled(words: list[str], rng: random.Random) -> list[str]:
    """A 'style': two of five weak marker words in every row, the strong mark (a glued comma) in half."""
    words = words + rng.sample(MARKERS, 2)
    if rng.random() < 0.5:
        words[0] += ","
    return words


MARKERS = ["thou", "unto", "hath", "shall", "verily"]


def with_markers(rows: list[Example], share: float, seed: int = 3) -> list[Example]:
    """Clean rows use the style's marker words too (one in `share` of the rows), so none is pure."""
    rng = random.Random(seed)
    return [Example(text=f"{ex.text} {rng.choice(MARKERS)}", label=ex.label, line=ex.line, poisoned=ex.poisoned,
                    orig_label=ex.orig_label) if rng.random() < share else ex for ex in rows]


def test_expansion_reaches_rows_without_the_confirmed_mark() -> None:
    train = plant(with_markers(corpus(4000), 0.3), 0.1, 1, styled)
    aux = with_markers(corpus(100, seed=9), 0.3, seed=4)
    plain = screen_examples(train, aux, SETTINGS)
    expanded = screen_examples(train, aux, LexicalSettings(expand=True))
    assert plain.truth["recall"] < 0.6
    assert expanded.truth["recall"] > plain.truth["recall"] + 0.2
    assert expanded.truth["false_removal_rate"] <= 0.03
    grown = expanded.expansions[0]
    assert grown.label == 1 and 0 < len(grown.added) <= grown.seed
    assert {r.rule for r in expanded.removed} >= {"expand"}


def test_reports_name_labels_as_the_file_does() -> None:
    train = plant(corpus(2000), 0.05, 1, rare_word)
    summary = screen_examples(train, corpus(100, seed=9), SETTINGS, label_names=["neg", "pos"]).summary()
    assert summary["suspects"][0]["label"] == "pos" and summary["suspects"][0]["feature"] == "w:zq"
    assert summary["removed_per_rule"] == {"lexical": summary["rows_removed"]}
