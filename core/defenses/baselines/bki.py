"""BKI (Chen and Dai, 2021): find the trigger words a backdoored model relies on, drop the rows with them.

The caller passes a model already fitted to the poisoned training set (upstream trains a separate copy
of the victim for 10 epochs; `bench/grid.py` trains it with `muscle train --method vanilla`).

1. For every training sentence, the last-layer [CLS] embedding of the sentence and of each
   one-word-deleted variant; word importance = ‖Δ‖_∞.
2. Keep each sentence's top-5 words; per word keep (count, running mean importance);
   score = log10(count)·mean.
3. Trigger words: upstream takes only the single top-scored word, which cannot stop a Badnets attack
   with 4 trigger words (thunlp/OpenBackdoor PR #7: ASR > 0.9). We take every word whose score is a
   robust outlier (score > median + z·1.4826·MAD over words seen at least `min_count` times), at least
   one and at most `max_words` (5); `mode="top1"` restores upstream, `mode="topk"` takes `max_words`.
4. Remove every training row whose top-5 list contains a trigger word.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from core.defenses.baselines.common import sentence_representation

Mode = Literal["outlier", "topk", "top1"]


def variants(words: Sequence[str]) -> list[str]:
    """The sentence and each one-word-deleted variant."""
    return [" ".join(words), *(" ".join([*words[:i], *words[i + 1:]]) for i in range(len(words)))]


def top_words(words: Sequence[str], reps: np.ndarray, top: int = 5) -> list[tuple[str, float]]:
    """(word, ‖rep(without word) − rep(full)‖_∞) for the `top` most important positions."""
    deltas = np.abs(reps[1:] - reps[0]).max(axis=1)
    order = np.argsort(-deltas, kind="stable")[:top]
    return [(words[i], float(deltas[i])) for i in order]


def aggregate(per_sentence: Sequence[Sequence[tuple[str, float]]]) -> dict[str, tuple[int, float]]:
    """word -> (count, mean importance) over the sentences' top lists."""
    stats: dict[str, tuple[int, float]] = {}
    for items in per_sentence:
        for word, value in items:
            n, mean = stats.get(word, (0, 0.0))
            stats[word] = (n + 1, (n * mean + value) / (n + 1))
    return stats


def scores(stats: dict[str, tuple[int, float]]) -> dict[str, float]:
    return {w: math.log10(n) * mean for w, (n, mean) in stats.items()}


def select_trigger_words(stats: dict[str, tuple[int, float]], mode: Mode = "outlier", max_words: int = 5,
                         z: float = 3.5, min_count: int = 5) -> list[str]:
    """The suspected trigger words, highest score first (see the module docstring)."""
    if not stats:
        return []
    sc = scores(stats)
    ranked = sorted(sc, key=lambda w: (-sc[w], w))
    if mode == "top1":
        return ranked[:1]
    if mode == "topk":
        return ranked[:max_words]
    pool = np.asarray([sc[w] for w in ranked if stats[w][0] >= min_count])
    if len(pool) < 3:  # too few frequent words for a spread: fall back to upstream's single word
        return ranked[:1]
    median = float(np.median(pool))
    mad = float(np.median(np.abs(pool - median))) * 1.4826
    cut = median + z * max(mad, 1e-12)
    picked = [w for w in ranked if sc[w] > cut and stats[w][0] >= min_count][:max_words]
    return picked or ranked[:1]


def analyse(model: Any, tokenizer: Any, texts: Sequence[str], top: int = 5, batch_size: int = 128,
            max_length: int = 512) -> list[list[tuple[str, float]]]:
    """Top-`top` (word, importance) per text; variants of several texts share a forward batch."""
    out: list[list[tuple[str, float]]] = []
    pending: list[list[str]] = []
    flat: list[str] = []

    def flush() -> None:
        # Chunked so memory stays bounded by ~batch_size representations, even for long documents.
        reps = sentence_representation(model, tokenizer, flat, batch_size, max_length, pool="auto")
        pos = 0
        for words in pending:
            n = len(words) + 1
            out.append(top_words(words, reps[pos:pos + n], top) if words else [])
            pos += n
        pending.clear()
        flat.clear()

    for text in texts:
        words = text.strip().split()
        pending.append(words)
        flat.extend(variants(words))
        if len(flat) >= batch_size:
            flush()
    if pending:
        flush()
    return out


def filter_training(model: Any, tokenizer: Any, examples: Sequence[Any], top: int = 5,
                    mode: Mode = "outlier", max_words: int = 5, z: float = 3.5, min_count: int = 5,
                    batch_size: int = 128, max_length: int = 512) -> tuple[list[Any], dict[str, Any]]:
    """Rows to keep (rows expose `.text`), and a report of what was removed and why."""
    per_sentence = analyse(model, tokenizer, [ex.text for ex in examples], top, batch_size, max_length)
    stats = aggregate(per_sentence)
    triggers = select_trigger_words(stats, mode, max_words, z, min_count)
    chosen = set(triggers)
    kept, removed = [], []
    for ex, items in zip(examples, per_sentence, strict=True):
        (removed if chosen & {w for w, _ in items} else kept).append(ex)
    sc = scores(stats)
    report: dict[str, Any] = {
        "defense": "bki", "mode": mode, "trigger_words": triggers,
        "top_scores": [{"word": w, "count": stats[w][0], "mean": stats[w][1], "score": sc[w]}
                       for w in sorted(sc, key=lambda w: (-sc[w], w))[:20]],
        "rows_in": len(examples), "rows_kept": len(kept), "rows_removed": len(removed),
    }
    report.update(poison_accounting(examples, removed))
    return kept, report


def poison_accounting(examples: Sequence[Any], removed: Sequence[Any]) -> dict[str, Any]:
    """When rows carry a `poisoned` flag (simulation), how many poisoned/clean rows were removed."""
    flags = [getattr(ex, "poisoned", None) for ex in examples]
    if all(f is None for f in flags):
        return {}
    n_poison = sum(bool(f) for f in flags)
    r_poison = sum(bool(getattr(ex, "poisoned", False)) for ex in removed)
    return {"poisoned_in": n_poison, "poisoned_removed": r_poison,
            "clean_removed": len(removed) - r_poison,
            "poison_recall": r_poison / n_poison if n_poison else None}
