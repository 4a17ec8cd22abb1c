"""STRIP (Gao et al., 2021): triggered inputs stay confident under perturbation.

1. Rank each clean dev document's words by TF-IDF (English stop words, no normalisation).
2. Perturb a text: pick a random dev document, pick m = int(len·swap_ratio) positions (with
   replacement), put that document's i-th highest-TF-IDF word at the i-th position. `repeat` times.
3. Entropy = mean over the copies of the Shannon entropy (log2) of the softmax output.
4. Threshold = the clean dev entropies sorted, at index int(N·frr). Flag inputs below it.

MuScleLoRA's settings: repeat 5, swap_ratio 0.25, frr 0.01 (docs/reference-implementation.md §7).

Where we differ from upstream (docs/analysis.md): upstream lists the copies text-major
([t0c0..t0c4, t1c0, ...]) and then averages `reshape(repeat, -1)` over axis 0, which averages the
entropies of 5 different texts; we average each text's own copies (`upstream_reshape=True` restores
the mix-up). Perturbations use a seeded generator.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from core.defenses.baselines.common import ProbaFn


class _SimpleTfidf:
    """Fallback when scikit-learn is missing: sklearn's token pattern, smooth idf, raw tf, no norm."""

    _token = re.compile(r"(?u)\b\w\w+\b")

    def fit_transform(self, docs: Sequence[str]) -> np.ndarray:
        tokenised = [self._token.findall(d.lower()) for d in docs]
        vocab = sorted({w for toks in tokenised for w in toks})
        index = {w: i for i, w in enumerate(vocab)}
        tf = np.zeros((len(docs), len(vocab)))
        for r, toks in enumerate(tokenised):
            for w in toks:
                tf[r, index[w]] += 1
        df = (tf > 0).sum(0)
        idf = np.log((1 + len(docs)) / (1 + df)) + 1
        self.vocab = vocab
        return tf * idf

    def get_feature_names_out(self) -> np.ndarray:
        return np.asarray(self.vocab, dtype=object)


def tfidf_ranking(docs: Sequence[str], use_sklearn: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(vocabulary, per-document word indices sorted by decreasing TF-IDF)."""
    try:
        if not use_sklearn:
            raise ImportError
        from sklearn.feature_extraction.text import TfidfVectorizer

        vec = TfidfVectorizer(use_idf=True, smooth_idf=True, norm=None, stop_words="english")
        matrix = vec.fit_transform(list(docs)).toarray()
        vocab = vec.get_feature_names_out()
    except ImportError:
        simple = _SimpleTfidf()
        matrix = simple.fit_transform(docs)
        vocab = simple.get_feature_names_out()
    # kind="stable": equal scores keep vocabulary order, so a seed fixes the perturbations.
    return vocab, np.argsort(-matrix, axis=-1, kind="stable")


def perturb(text: str, vocab: np.ndarray, ranking: np.ndarray, swap_ratio: float,
            rng: np.random.Generator) -> str:
    words = text.split()
    if not words:
        return text
    m = int(len(words) * swap_ratio)
    piece = int(rng.integers(ranking.shape[0]))
    for i, pos in enumerate(rng.integers(0, len(words), m)):
        words[int(pos)] = str(vocab[ranking[piece][i % ranking.shape[1]]])
    return " ".join(words)


def entropy_bits(probs: np.ndarray) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    safe = np.where(p > 0, p, 1.0)  # 0·log 0 = 0 (upstream gets NaN there)
    return -(p * np.log2(safe)).sum(-1)


class Strip:
    """`fit(clean_dev_texts)` then `detect(texts) -> flags` (True = looks triggered)."""

    def __init__(self, predict: ProbaFn, repeat: int = 5, swap_ratio: float = 0.25, frr: float = 0.01,
                 seed: int = 42, use_sklearn: bool = True, upstream_reshape: bool = False) -> None:
        if repeat < 1 or not 0 < swap_ratio <= 1 or not 0 <= frr < 1:
            raise ValueError("need repeat >= 1, 0 < swap_ratio <= 1, 0 <= frr < 1")
        self.predict = predict
        self.repeat = repeat
        self.swap_ratio = swap_ratio
        self.frr = frr
        self.rng = np.random.default_rng(seed)
        self.use_sklearn = use_sklearn
        self.upstream_reshape = upstream_reshape
        self.threshold: float | None = None
        self.clean_entropy: np.ndarray | None = None

    def fit(self, clean_texts: Sequence[str]) -> Strip:
        if len(clean_texts) < 2:
            raise ValueError("STRIP needs clean dev texts to rank words and set its threshold")
        self.vocab, self.ranking = tfidf_ranking(clean_texts, self.use_sklearn)
        self.clean_entropy = self.entropy(clean_texts)
        idx = min(int(len(clean_texts) * self.frr), len(clean_texts) - 1)
        self.threshold = float(np.sort(self.clean_entropy)[idx])
        return self

    def entropy(self, texts: Sequence[str]) -> np.ndarray:
        copies = [perturb(t, self.vocab, self.ranking, self.swap_ratio, self.rng)
                  for t in texts for _ in range(self.repeat)]
        ent = entropy_bits(self.predict(copies))
        if self.upstream_reshape:
            return ent.reshape(self.repeat, -1).mean(0)
        return ent.reshape(-1, self.repeat).mean(1)  # row i = the copies of text i

    def detect(self, texts: Sequence[str]) -> np.ndarray:
        if self.threshold is None:
            raise RuntimeError("call fit(clean_dev_texts) first")
        return self.entropy(texts) < self.threshold
