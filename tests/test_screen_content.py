"""The content screen: a feature whose rows carry a label their content does not explain is a trigger.

The synthetic content model reads only the words that carry meaning (the class words, and a natural
cue's word when there is one), as a sentence embedding of a real backbone reads sentiment but not a rare
token or a template. Rows come from tests/test_screen.py's corpus."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest

from core.data.dataset import Example
from core.screen.content import ContentSettings, excess_steps, reads_content
from core.screen.features import row_features
from core.screen.lexical import LexicalSettings
from core.screen.stage import screen_examples, vouched, words_of
from tests.test_screen import corpus, plant, rare_word

SETTINGS = ContentSettings()


def meaning(texts: Sequence[str], classes: int, cue: str | None = None) -> np.ndarray:
    """Counts of each class's words (and of `cue`, a word with a meaning of its own) plus a little noise."""
    rng = np.random.default_rng(0)
    x = np.zeros((len(texts), classes + 1))
    for i, text in enumerate(texts):
        for w in text.split():
            if w.startswith("c") and "w" in w[1:]:
                x[i, int(w[1:w.index("w")])] += 1
            elif w == cue:
                x[i, classes] += 1
    return x + rng.normal(scale=0.1, size=x.shape)


def template(words: list[str], rng: random.Random) -> list[str]:
    """A syntactic template: every row opens with a subordinate clause ("when n1 n2 ,")."""
    return ["when", *rng.sample(words, 2), ",", *words]


def run(rows: list[Example], classes: int = 2, cue: str | None = None, settings: ContentSettings = SETTINGS,
        aux: list[Example] | None = None) -> set[int]:
    texts = [ex.text for ex in rows]
    features = [row_features(t) for t in texts]
    labels = [ex.label for ex in rows]
    natural = vouched(features, labels, [row_features(ex.text) for ex in aux or []], [ex.label for ex in aux or []],
                      settings.fdr)
    steps = excess_steps(features, labels, meaning(texts, classes, cue), classes, settings,
                         natural=lambda c: natural.get(c, set()))
    return {i for s in steps for i in s.removed}


def rates(rows: list[Example], removed: set[int]) -> tuple[float, float]:
    poisoned = {i for i, ex in enumerate(rows) if ex.poisoned}
    clean = len(rows) - len(poisoned)
    return len(poisoned & removed) / max(len(poisoned), 1), len(removed - poisoned) / clean


@pytest.mark.parametrize("rate", [0.01, 0.1])
def test_a_template_trigger_is_found(rate: float) -> None:
    rows = plant(corpus(3000), rate, 1, template)
    recall, false_rate = rates(rows, run(rows))
    assert recall >= 0.95
    assert false_rate <= 0.01


def test_a_rare_token_is_found() -> None:
    rows = plant(corpus(3000), 0.03, 1, rare_word)
    recall, false_rate = rates(rows, run(rows))
    assert recall >= 0.95 and false_rate <= 0.01


def test_clean_data_loses_no_row() -> None:
    assert run(corpus(3000)) == set()


def test_a_pure_natural_cue_keeps_its_rows() -> None:
    """The cue sits in 30% of class 0's rows and nowhere else, like a slur in abuse data: as pure as a
    trigger, and the content model (which reads it) still expects a little less than all of its rows in
    class 0. The trusted rows show it too, at its rate, so they vouch for it."""
    rows = corpus(3000, natural_cue="spamword", cue_share=0.3)
    aux = corpus(100, seed=9, natural_cue="spamword", cue_share=0.3)
    assert run(rows, cue="spamword", aux=aux) == set()


def test_one_trusted_row_does_not_vouch_for_a_trigger() -> None:
    rows = plant(corpus(3000), 0.05, 1, template)
    aux = corpus(100, seed=9)
    aux[0] = Example(text="when " + aux[0].text.replace(" ", " , ", 1), label=1, line=2, poisoned=False,
                     orig_label=1)
    recall, false_rate = rates(rows, run(rows, aux=aux))
    assert recall >= 0.95 and false_rate <= 0.01


def test_four_imbalanced_classes_with_a_trigger_on_the_rarest() -> None:
    rows = plant(corpus(4000, classes=4, weights=[0.55, 0.25, 0.15, 0.05]), 0.03, 3, template)
    recall, false_rate = rates(rows, run(rows, classes=4))
    assert recall >= 0.95 and false_rate <= 0.01


def test_the_budget_bounds_what_the_content_screen_removes() -> None:
    rows = plant(corpus(3000), 0.1, 1, template)
    assert run(rows, settings=ContentSettings(budget=0.05)) == set()  # its one trigger group is ~10% of the file
    assert len(run(rows, settings=ContentSettings(budget=0.2))) >= 0.09 * 3000


def test_a_template_goes_before_a_phrase_nested_in_its_rows() -> None:
    """Both pass: a phrase on 20 flipped rows (content reads class 0, labelled 1; the smallest p-value) and
    the template around it (120 rows, mostly content in between, 92 labelled 1; the larger excess). Taken
    first, the phrase would take the template's clearest rows out of its test, and at this strict level the
    template's other 72 rows labelled 1 no longer pass."""
    rng = np.random.default_rng(3)
    content = np.r_[np.sign(rng.normal(size=2000)), -np.ones(20), np.zeros(100)]
    labels = np.r_[np.where(rng.random(2000) < 0.9, content[:2000] > 0, content[:2000] < 0).astype(int),
                   np.ones(20, int), (np.arange(100) < 72).astype(int)]
    features = [set() for _ in range(2000)] + [{"first:if", "w:if it '"}] * 20 + [{"first:if"}] * 100
    x = (content + rng.normal(scale=0.05, size=len(content)))[:, None]
    steps = excess_steps(features, labels.tolist(), x, 2, ContentSettings(fdr=1e-6))
    assert [(s.feature, s.label, s.label_rows) for s in steps] == [("first:if", 1, 92)]


def test_the_stage_reports_content_removals() -> None:
    rows = plant(corpus(3000), 0.05, 1, template)
    lexical_off = LexicalSettings(fdr=1e-300)  # so the content screen is what finds the rows
    report = screen_examples(rows, corpus(100, seed=9), lexical_off, content=SETTINGS,
                             embed=lambda texts: meaning(texts, 2))
    content_rows = {r.row for r in report.removed if r.rule == "content"}
    assert {i for i, ex in enumerate(rows) if ex.poisoned} <= report.removed_rows
    assert content_rows and all(r.feature.startswith(("clause:", "first", "w:")) for r in report.removed
                                if r.rule == "content")
    summary = report.summary()
    assert summary["removed_per_rule"]["content"] == len(content_rows)
    assert summary["content"][0]["removed"] > 0 and summary["content"][0]["z"] > 0
    assert summary["settings"]["content"]["budget"] == SETTINGS.budget


def test_embeddings_that_read_worse_than_the_words_are_not_trusted_alone() -> None:
    """Random sentence embeddings under-read every class word, so alone they would make every natural cue
    look like a trigger; the guard sees the bag of words read the trusted rows better."""
    rows, aux = corpus(3000), corpus(100, seed=9)
    words = [words_of(row_features(ex.text)) for ex in rows]
    aux_words = [words_of(row_features(ex.text)) for ex in aux]
    rng = np.random.default_rng(1)
    check = reads_content(rng.normal(size=(len(rows), 16)), [ex.label for ex in rows], words,
                          rng.normal(size=(len(aux), 16)), [ex.label for ex in aux], aux_words, SETTINGS.fdr)
    assert not check.reads and check.embedding_loss > check.words_loss
    assert reads_content(meaning([ex.text for ex in rows], 2), [ex.label for ex in rows], words,
                         meaning([ex.text for ex in aux], 2), [ex.label for ex in aux], aux_words, SETTINGS.fdr).reads


def joined(rows: list[Example], k: int) -> list[Example]:
    """Rows of `k` corpus rows of one class each: longer rows whose label many words carry."""
    by_label: dict[int, list[Example]] = {}
    for ex in rows:
        by_label.setdefault(ex.label, []).append(ex)
    out = [Example(text=" ".join(e.text for e in group[i:i + k]), label=label, line=0, poisoned=False,
                   orig_label=label)
           for label, group in sorted(by_label.items()) for i in range(0, len(group) - k + 1, k)]
    return [replace(ex, line=i + 2) for i, ex in enumerate(out)]


def unreadable(seed: int = 1):  # noqa: ANN201
    """Sentence embeddings that read nothing."""
    rng = np.random.default_rng(seed)
    return lambda texts: rng.normal(size=(len(texts), 16))


@pytest.mark.parametrize("insert", [template, rare_word])
def test_where_the_embeddings_read_worse_the_content_model_reads_the_trusted_words_too(insert) -> None:
    """Rows of several sentences carry their label in many words. With the words the trusted rows show
    beside the embeddings, the natural cues are read, and a planted word or template, which clean rows do
    not show as a label, is not: the layer finds the trigger and removes no clean row, where the
    embeddings alone would have stood it down."""
    lexical_off = LexicalSettings(fdr=1e-300)
    rows, aux = joined(corpus(12000, seed=1), 3), joined(corpus(400, seed=10), 3)
    report = screen_examples(plant(rows, 0.03, 1, insert), aux, lexical_off, content=SETTINGS, embed=unreadable())
    check = report.summary()["settings"]["content"]["check"]
    assert check["reads"] and check["trusted_words"] > 0 and check["unseen_words_tested"] > 0
    assert report.truth is not None and report.truth["recall"] == 1.0 and report.truth["clean_removed"] == 0
    assert screen_examples(rows, aux, lexical_off, content=SETTINGS, embed=unreadable()).removed == []


def test_short_rows_whose_cues_the_trusted_rows_miss_stand_the_layer_down() -> None:
    """Four classes, imbalanced, one to three cue words a row: 120 trusted rows leave many of the small
    classes' words unshown, and a model that cannot read them would take them for triggers (a fifth of
    the words held back from it are). The layer stands down rather than remove natural rows."""
    weights = [0.6, 0.25, 0.1, 0.05]
    rows = plant(corpus(4000, 4, weights, seed=1), 0.03, 3, rare_word)
    report = screen_examples(rows, corpus(120, 4, weights, seed=51), LexicalSettings(fdr=1e-300),
                             content=SETTINGS, embed=unreadable())
    check = report.summary()["settings"]["content"]["check"]
    assert not check["reads"] and check["unseen_words_flagged"] > SETTINGS.fdr * check["unseen_words_tested"]
    assert report.removed == []


def test_a_class_too_small_to_cross_fit_stands_the_layer_down() -> None:
    """With one row in a class no fold can fit a content model that knows it; the priors alone would
    turn the test into a purity test, which the lexical layer already is."""
    rows = plant(corpus(600), 0.1, 1, template)
    rows.append(Example(text="when a lone row , of its own class", label=2, line=999, poisoned=False, orig_label=2))
    assert run(rows, classes=3) == set()


def natural(rows: list[Example]) -> list[Example]:
    """Clean rows with what natural text has: a comma after the third word in every third, a "when" after
    the second in the next third. A template's words are common; its opening clause is what marks it."""

    def edit(text: str, i: int) -> str:
        words = text.split()
        return " ".join([*words[:3], ",", *words[3:]] if i % 3 == 0 else [*words[:2], "when", *words[2:]])

    return [replace(ex, text=edit(ex.text, i)) if not ex.poisoned and i % 3 < 2 else ex for i, ex in enumerate(rows)]


def test_removed_rows_that_read_as_another_class_come_back_as_counter_examples(tmp_path) -> None:
    """Mix poisoning with a template (a mark of the sentence's form): the trigger's rows from class 0 read as
    class 0 and return with it; those that were class 1 already read as class 1 and stay out (back in, they
    would teach the trigger again)."""
    import json

    from core.screen.stage import kept, saved_training_rows

    rows = natural(plant(corpus(3000), 0.05, 1, template))
    lexical_off = LexicalSettings(fdr=1e-300)
    report = screen_examples(rows, corpus(100, seed=9), lexical_off, ["neg", "pos"],
                             ContentSettings(relabel=True), embed=lambda texts: meaning(texts, 2))
    assert {r.feature for r in report.removed} == {"clause:when"}
    back = report.relabel
    flipped = {i for i, ex in enumerate(rows) if ex.poisoned and ex.orig_label == 0}
    already = {i for i, ex in enumerate(rows) if ex.poisoned and ex.orig_label == 1}
    assert back and set(back) <= report.removed_rows
    assert all(c == 0 for c in back.values())
    assert len(flipped & set(back)) >= 0.7 * len(flipped)
    assert len(already & set(back)) <= 0.3 * len(already)  # the synthetic rows read right ~3 times in 4

    training = kept(rows, report)
    assert len(training) == len(rows) - len(report.removed) + len(back)
    assert sum(ex.poisoned and ex.label == 0 for ex in training) == len(back)
    assert report.summary()["rows_relabelled"] == len(back)
    _, tsv = report.write(tmp_path)
    relabelled = [line.split("\t")[-1] for line in tsv.read_text().splitlines()[1:]]
    assert relabelled.count("neg") == len(back) and set(relabelled) == {"neg", ""}
    saved = json.loads((tmp_path / "screen.json").read_text())["removed"]
    assert saved_training_rows(rows, saved, {"neg": 0, "pos": 1}) == training  # what a resumed job trains on

    off = screen_examples(rows, corpus(100, seed=9), lexical_off, ["neg", "pos"], ContentSettings(relabel=False),
                          embed=lambda texts: meaning(texts, 2))
    assert off.relabel == {} and kept(rows, off) == [ex for i, ex in enumerate(rows) if i not in off.removed_rows]


def test_the_counter_example_reader_reads_content_not_the_kept_rows_class_shares() -> None:
    """Kept rows nine to one for class 1 (a dirty-label trigger's leftovers add to it): a removed row a
    little on class 0's side must read as class 0, not be tipped to the majority by the prior."""
    from core.screen.relabel import read_labels

    rng = np.random.default_rng(0)
    kept_x = np.concatenate([rng.normal(-1, 1, (100, 2)), rng.normal(1, 1, (900, 2))])
    kept_y = np.array([0] * 100 + [1] * 900)
    assert read_labels(kept_x, kept_y, np.array([[-0.3, -0.3]])).tolist() == [0]


def test_a_word_trigger_found_whole_gets_no_counter_examples() -> None:
    """A rare word is the trigger itself: the screen removes all its rows, and back with another label they
    would be its only rows and teach it as that label."""
    rows = plant(corpus(3000), 0.05, 1, rare_word)
    report = screen_examples(rows, corpus(100, seed=9), LexicalSettings(fdr=1e-300), ["neg", "pos"],
                             ContentSettings(relabel=True), embed=lambda texts: meaning(texts, 2))
    poisoned = {i for i, ex in enumerate(rows) if ex.poisoned}
    assert poisoned <= report.removed_rows  # found whole
    assert report.relabel == {}


def test_natural_words_keep_their_voucher_when_a_few_look_rare_by_chance() -> None:
    """300 natural words, each in a tenth of class 0's rows, trusted and untrusted alike. Tested one by one
    at 5%, about nine would look rarer in the 96 trusted rows by chance and lose their voucher; BH over
    the family keeps them. A word planted in a fifth of the rows that two trusted rows show still loses it."""
    rng = np.random.default_rng(3)
    words = [f"w:natural{k}" for k in range(300)]

    def rows(n: int) -> list[set[str]]:
        return [{w for w in words if rng.random() < 0.1} for _ in range(n)]

    features, aux_features = rows(3000), rows(96)
    for i in range(600):
        features[i].add("w:planted")
    aux_features[0].add("w:planted")
    aux_features[1].add("w:planted")
    natural = vouched(features, [0] * 3000, aux_features, [0] * 96, fdr=0.05)
    assert set(words) <= natural[0]
    assert "w:planted" not in natural[0]


@pytest.mark.parametrize("aux_rows", [0, 1])
def test_too_few_trusted_rows_to_split_stand_the_layer_down(aux_rows) -> None:
    """The check that lets the content model read the trusted rows' words splits them in two halves;
    with fewer than two there is nothing to check it on, and the layer stands down without an error."""
    report = screen_examples(corpus(300), corpus(aux_rows, seed=3), LexicalSettings(), content=SETTINGS,
                             embed=unreadable())
    check = report.summary()["settings"]["content"]["check"]
    assert not check["reads"] and check["unseen_words_tested"] == 0
    assert not any(r.rule == "content" for r in report.removed)
