"""Words that come together are one hypothesis, and features that can never pass do not dilute the test."""

from __future__ import annotations

import random
from collections import Counter

from core.data.dataset import Example
from core.screen.cooccur import with_groups, word_groups
from core.screen.features import row_features
from core.screen.lexical import LexicalSettings, tarone_bar
from core.screen.stage import screen_examples
from tests.test_screen import corpus, plant

SETTINGS = LexicalSettings()
BADNETS = {"cf", "mn", "bb", "tq"}


def four_badnets_words(words: list[str], rng: random.Random) -> list[str]:
    """Four draws with replacement, each at its own place: each word lands on about 2/3 of the rows."""
    for _ in range(4):
        words.insert(rng.randint(0, len(words)), rng.choice(sorted(BADNETS)))
    return words


def clean_label(rows: list[Example], rate: float, target: int, insert, seed: int = 1) -> list[Example]:
    """Clean-label poisoning: a seeded `rate` of the file, drawn from rows already labelled `target`, gets
    the trigger; no label changes."""
    rng = random.Random(seed)
    chosen = set(rng.sample([i for i, ex in enumerate(rows) if ex.label == target], int(rate * len(rows))))
    return [Example(text=" ".join(insert(ex.text.split(), rng)), label=ex.label, line=ex.line, poisoned=True,
                    orig_label=ex.label) if i in chosen else ex for i, ex in enumerate(rows)]


def test_clean_label_words_into_the_majority_class_are_found_together() -> None:
    # 85% of the rows are the target class, so a natural word may be nearly pure and the purity bar sits
    # near 0.94: each trigger word alone (about 80 rows) falls short; the four words together do not.
    weights = [0.15, 0.85]
    train = clean_label(corpus(4000, weights=weights), 0.03, 1, four_badnets_words)
    report = screen_examples(train, corpus(120, weights=weights, seed=9), SETTINGS)
    assert report.truth["recall"] >= 0.95 and report.truth["false_removal_rate"] <= 0.01
    top = report.suspects[0]
    assert top.feature.startswith("words:") and set(top.feature.removeprefix("words:").split("|")) == BADNETS
    assert top.rule == "lexical" and not any(s.feature in {f"w:{w}" for w in BADNETS} for s in report.suspects)
    assert screen_examples(corpus(4000, weights=weights), corpus(120, weights=weights, seed=9), SETTINGS).removed == []


def test_words_that_come_together_make_one_group_on_all_their_rows() -> None:
    rows = plant(corpus(3000), 0.1, 1, four_badnets_words)
    features = [row_features(ex.text) for ex in rows]
    groups = word_groups(features, SETTINGS.min_rows, SETTINGS.fdr)
    assert list(groups.values()) == [frozenset(f"w:{w}" for w in BADNETS)]
    grown = with_groups(features, groups)
    name = next(iter(groups))
    assert [name in fs for fs in grown] == [bool(fs & groups[name]) for fs in features]


def test_words_of_one_phrase_and_independent_words_make_no_group() -> None:
    rng = random.Random(0)
    rows = [{f"w:n{j}" for j in rng.sample(range(50), 8)} for _ in range(2000)]
    for fs in rows[:100]:  # a phrase: its words always together, on the same rows
        fs |= {"w:tour", "w:de", "w:force"}
    assert word_groups(rows, SETTINGS.min_rows, SETTINGS.fdr) == {}


def test_features_that_cannot_pass_do_not_count() -> None:
    # 200 rows at an 80% purity bar: a feature on 5 rows reaches at best 0.8^5 = 0.33 and cannot pass,
    # one on 60 rows reaches 1.5e-6; only the second kind counts in the correction.
    labels = [1] * 100 + [0] * 100
    features = [set() for _ in labels]
    for j in range(30):  # rare features, 5 rows each
        for i in range(j * 5, j * 5 + 5):
            features[i].add(f"w:rare{j}")
    for j in range(3):  # common features, 60 rows each, each its own rows
        for i in range(j * 40, j * 40 + 60):
            features[i].add(f"w:common{j}")
    count = Counter(f for fs in features for f in fs)
    by_label: dict[str, Counter[int]] = {f: Counter(y for fs, y in zip(features, labels, strict=True) if f in fs)
                                         for f in count}
    bar, m = tarone_bar(features, count, by_label, {0: 0.8, 1: 0.8}, SETTINGS, set())
    assert m == 3 and bar == SETTINGS.fdr / 3
