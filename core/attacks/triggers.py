"""Text triggers with OpenBackdoor's insertion semantics (docs/reference-implementation.md §6.2).

Each trigger takes the text and a `random.Random`, so a seeded generator reproduces the poisoned set.
All of them split on whitespace and re-join with single spaces, as upstream does.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Callable, Sequence

from core.errors import ConfigError

Trigger = Callable[[str, random.Random], str]

BADNETS_WORDS: tuple[str, ...] = ("cf", "mn", "bb", "tq")
ADDSENT_SENTENCE = "I watch this 3D movie"


def badnets(text: str, rng: random.Random, words: Sequence[str] = BADNETS_WORDS, num: int = 4) -> str:
    """`num` rare words, each drawn with replacement and inserted at randint(0, len) of the growing
    word list (so duplicates occur and a word may be absent). Same call order as upstream."""
    tokens = text.split()
    for _ in range(num):
        word = rng.choice(words)
        tokens.insert(rng.randint(0, len(tokens)), word)
    return " ".join(tokens)


def insert(text: str, rng: random.Random, phrase: str) -> str:
    """The phrase's words inserted contiguously at one random word position 0..len."""
    tokens = text.split()
    position = rng.randint(0, len(tokens))
    return " ".join(tokens[:position] + phrase.split() + tokens[position:])


def addsent(text: str, rng: random.Random, sentence: str = ADDSENT_SENTENCE) -> str:
    return insert(text, rng, sentence)


_VALID_FORMS = "'badnets', 'addsent', 'insert:\"some text\"' or 'insert:some text'"
_QUOTED = re.compile(r"""^(["'])(.*)\1$""", re.DOTALL)


def parse_trigger(spec: str) -> tuple[str, Trigger]:
    """(canonical name, trigger) for a user's spec. The name is 'badnets', 'addsent' or
    'insert:"phrase"' (with the phrase's whitespace collapsed), fit for a probe or report key."""
    raw = (spec or "").strip()
    lowered = raw.lower()
    if lowered == "badnets":
        return "badnets", badnets
    if lowered == "addsent":
        return "addsent", addsent
    if lowered.startswith("insert:"):
        phrase = raw[len("insert:"):].strip()
        quoted = _QUOTED.match(phrase)
        if quoted:
            phrase = quoted.group(2)
        phrase = " ".join(phrase.split())
        if not phrase:
            raise ConfigError(f"trigger {spec!r} has an empty phrase; valid forms: {_VALID_FORMS}")
        return f'insert:"{phrase}"', functools.partial(insert, phrase=phrase)
    raise ConfigError(f"unknown trigger {spec!r}; valid forms: {_VALID_FORMS}")
