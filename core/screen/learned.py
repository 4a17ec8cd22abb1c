"""The learned screen: a short bait run, then groups of rows the trusted rows never reach.

Triggers no n-gram shows (a syntactic template, a writing style) are still learned fast: after one epoch
a fine-tuned model maps triggered rows to a region of their own. The bait run is cross-fitted: the rows
are split in `folds`; a fresh copy of the backbone is fine-tuned for one epoch on all folds but one and
represents the held-out fold and the trusted rows, which it has equally not seen (a row the model trained
on sits differently from one it did not, so no row is judged by a model that saw it). Then per fold
`clusters.absent_clusters` finds the groups the trusted rows avoid, with BH over every cluster.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.screen.clusters import Cluster, absent_clusters
from core.screen.lexical import benjamini_hochberg, default_setting


@dataclass(frozen=True)
class LearnedSettings:
    folds: int = 2
    clusters: int = default_setting("screen_clusters")
    fdr: float = default_setting("screen_fdr")
    seed: int = default_setting("seed")


def fold_of(n: int, folds: int, seed: int) -> list[int]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    fold = [0] * n
    for rank, i in enumerate(order):
        fold[i] = rank % folds
    return fold


def bait_clusters(rows: Sequence[Any], trusted: Sequence[Any], represent: Callable[[Sequence[Any], Sequence[Any],
                  Sequence[Any]], tuple[np.ndarray, np.ndarray]], settings: LearnedSettings) -> list[Cluster]:
    """`represent(train_rows, held_rows, trusted)` fine-tunes a bait model on `train_rows` and returns the
    representations of `held_rows` and `trusted`. Cluster row indices refer to `rows`."""
    fold = fold_of(len(rows), settings.folds, settings.seed)
    found: list[Cluster] = []
    for f in range(settings.folds):
        held = [i for i in range(len(rows)) if fold[i] == f]
        train_rows = [rows[i] for i in range(len(rows)) if fold[i] != f]
        held_feats, trusted_feats = represent(train_rows, [rows[i] for i in held], trusted)
        for cl in absent_clusters(held_feats, [rows[i].label for i in held], trusted_feats,
                                  [r.label for r in trusted], settings.clusters, fdr=1.0, seed=settings.seed):
            found.append(Cluster(cl.label, tuple(held[i] for i in cl.rows), cl.share, cl.trusted,
                                 cl.trusted_of_class, cl.p_value))

    hits = benjamini_hochberg([cl.p_value for cl in found], settings.fdr) if found else []
    return [Cluster(cl.label, cl.rows, cl.share, cl.trusted, cl.trusted_of_class, cl.p_value,
                    flagged=hit and cl.share < 0.5) for cl, hit in zip(found, hits, strict=True)]


def backbone_bait(source: str, label_map: Any, config: Any,
                  should_cancel: Callable[[], bool] | None = None) -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """A `represent` that fine-tunes a fresh copy of the job's backbone for one epoch (full fine-tuning,
    the job's lr and batch size) and reads what its output layer sees."""

    def represent(train_rows: Sequence[Any], held: Sequence[Any], trusted: Sequence[Any]
                  ) -> tuple[np.ndarray, np.ndarray]:
        from core.defenses.baselines.common import penultimate_features
        from core.defenses.build import defend
        from core.models.backbones import family, load_backbone
        from core.training.loop import train

        bait_config = config.model_copy(update={"method": "vanilla", "epochs": 1, "checkpoint_every_epoch": False,
                                                "canary": False, "fixed_epoch": None, "frequency_every": 0,
                                                "head_init": "random"})
        model, tokenizer = load_backbone(source, label_map, seed=config.seed)
        model, _ = defend(model, tokenizer, bait_config, family(model), trusted)
        train(model, tokenizer, list(train_rows), list(trusted), list(trusted), bait_config,
              should_cancel=should_cancel)
        size, length = config.eval_batch_size, config.max_length
        return (penultimate_features(model, tokenizer, [r.text for r in held], size, length),
                penultimate_features(model, tokenizer, [r.text for r in trusted], size, length))

    return represent
