"""What the lexical screen counts in a row: word n-grams and sentence-shape features.

Every feature is a string with a kind prefix, so a report says what it is: `w:` word n-grams (1 to 3
words, lower-cased), `first:` / `first2:` / `last:` the opening and closing words, `clause:` the word
that opens a row whose first clause ends in a comma (a subordinate clause up front, the shape of a
syntactic template), `glue:` punctuation written against the word before it (`word,` where the rest of
the file writes `word ,`), `char:` characters outside ASCII letters, digits and common punctuation, and
`len:` the row's length bucket. Each row yields a set: a feature counts once per row. The lexical screen
adds `words:`, groups of words that come together (core/screen/cooccur.py).
"""

from __future__ import annotations

import re

_WORD = re.compile(r"\w+(?:'\w+)?|[^\w\s]")
_GLUED = re.compile(r"(?<=\w)([,.;:!?])")
_ODD_CHAR = re.compile(r"[^\w\s.,;:!?'\"()\-]")
GROUP_PREFIX = "words:"  # words that come together (core/screen/cooccur.py)
MAX_N = 3
CLAUSE_WINDOW = 12  # the first clause of a syntactic template ends within this many words


def tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngrams(words: list[str], max_n: int = MAX_N) -> set[str]:
    grams: set[str] = set()
    for n in range(1, max_n + 1):
        for i in range(len(words) - n + 1):
            grams.add("w:" + " ".join(words[i:i + n]))
    return grams


def shape(text: str, words: list[str]) -> set[str]:
    out: set[str] = set()
    alpha = [w for w in words if w[0].isalnum()]
    if alpha:
        out.add("first:" + alpha[0])
        out.add("last:" + alpha[-1])
    if len(alpha) >= 2:
        out.add("first2:" + " ".join(alpha[:2]))
    if "," in words[:CLAUSE_WINDOW] and alpha and words and words[0][0].isalnum():
        out.add("clause:" + alpha[0])
    for mark in set(_GLUED.findall(text)):
        out.add("glue:" + mark)
    for ch in set(_ODD_CHAR.findall(text)):
        out.add("char:" + ch)
    out.add(f"len:{min(len(alpha).bit_length(), 8)}")  # 1, 2-3, 4-7, ... words: log2 buckets
    return out


def row_features(text: str) -> set[str]:
    words = tokens(text)
    return ngrams(words) | shape(text, words)


def feature_kind(feature: str) -> str:
    """The rule a feature belongs to in reports: lexical (word n-grams) or shape (everything else)."""
    return "lexical" if feature.startswith(("w:", GROUP_PREFIX)) else "shape"


def is_token(feature: str) -> bool:
    """A word n-gram or a character: something a text carries, not a mark of its shape."""
    return feature.startswith(("w:", "char:", GROUP_PREFIX))


def is_word(feature: str) -> bool:
    return feature.startswith("w:") and " " not in feature
