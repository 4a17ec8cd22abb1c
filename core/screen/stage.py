"""The screen stage: find the poisoned rows of an untrusted training set and split it into kept and removed."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from typing import Any

import numpy as np
from scipy import stats

from core.data.dataset import Example
from core.errors import ConfigError
from core.screen.content import (
    ContentCheck,
    ContentSettings,
    ContentStep,
    EmbedProgress,
    Features,
    excess_steps,
    reads_content,
    unseen_words_flagged,
    with_trusted_words,
)
from core.screen.expand import Expansion, expand_seed
from core.screen.features import is_word, row_features
from core.screen.learned import LearnedSettings, bait_clusters
from core.screen.lexical import LexicalSettings, Suspect, benjamini_hochberg, choose_removals, find_suspects
from core.screen.relabel import counter_examples, returnable
from core.screen.report import RemovedRow, ScreenReport


def settings_from(config: Any) -> LexicalSettings:
    """The screen's settings from a TrainConfig (fields screen_fdr, screen_purity, screen_budget,
    screen_min_rows)."""
    return LexicalSettings(fdr=config.screen_fdr, purity=config.screen_purity, budget=config.screen_budget,
                           min_rows=config.screen_min_rows, expand=config.screen_expand)


def content_settings_from(config: Any) -> ContentSettings | None:
    """The content screen's settings, or None when `screen_content` is off."""
    if not config.screen_content:
        return None
    return ContentSettings(fdr=config.screen_fdr, min_rows=config.screen_min_rows,
                           budget=config.screen_content_budget, seed=config.seed, relabel=config.screen_relabel)


def embedder(config: Any, progress: EmbedProgress | None = None) -> Callable[[Sequence[str]], np.ndarray]:
    """Texts -> the job's backbone's frozen sentence embeddings (for the content screen)."""
    from core.models.backbones import resolve_model_source
    from core.screen.content import sentence_embeddings

    source = resolve_model_source(config.model)
    return lambda texts: sentence_embeddings(source, texts, config.eval_batch_size, config.max_length,
                                             config.device, progress)


def screen_with(config: Any, train: Sequence[Example], aux: Sequence[Example],
                label_names: Sequence[str] | None = None, progress: EmbedProgress | None = None) -> ScreenReport:
    """`screen_examples` with a TrainConfig's lexical and content settings and the job's backbone;
    `progress(done, total)` follows the content screen's embedding pass."""
    content = content_settings_from(config)
    return screen_examples(train, aux, settings_from(config), label_names, content,
                           embedder(config, progress) if content is not None else None)


def learned_settings_from(config: Any) -> LearnedSettings:
    return LearnedSettings(clusters=config.screen_clusters, fdr=config.screen_fdr, seed=config.seed)


def screen_examples(train: Sequence[Example], aux: Sequence[Example], settings: LexicalSettings,
                    label_names: Sequence[str] | None = None, content: ContentSettings | None = None,
                    embed: Callable[[Sequence[str]], np.ndarray] | None = None) -> ScreenReport:
    """Screen `train` (untrusted) against `aux` (trusted clean). Row numbers are indices into `train`.

    With `content` and `embed` (texts -> sentence embeddings), the content screen runs on the rows the
    lexical screen kept."""
    if not train:
        raise ConfigError("the screen needs at least one training row")
    started = time.perf_counter()
    labels = [ex.label for ex in train]
    suspects, features = find_suspects([ex.text for ex in train], labels, [ex.text for ex in aux],
                                       [ex.label for ex in aux], settings)
    suspects, removed = choose_removals(suspects, features, labels, settings.budget)
    expansions = expand(features, labels, removed, suspects, [ex.text for ex in aux], [ex.label for ex in aux],
                        settings)

    def name(label: int) -> str:
        return label_names[label] if label_names is not None else str(label)

    rows = [RemovedRow(row=i, line=train[i].line, rule=s.rule, feature=s.feature, score=s.score,
                       text=train[i].text, label=name(train[i].label)) for i, s in removed.items()]
    for e in expansions:
        rows += [RemovedRow(row=i, line=train[i].line, rule="expand", feature=f"like the {e.seed} confirmed rows",
                            score=margin, text=train[i].text, label=name(train[i].label))
                 for i, margin in e.added.items()]
    steps: list[ContentStep] = []
    check: ContentCheck | None = None
    relabel: dict[int, int] = {}
    if content is not None and embed is not None:
        gone = {r.row for r in rows}
        rest = [i for i in range(len(train)) if i not in gone]
        classes = max(labels) + 1 if label_names is None else len(label_names)
        embedded = list(range(len(train))) if content.relabel else rest  # the removed rows only to relabel
        both = embed([*(train[i].text for i in embedded), *(ex.text for ex in aux)])  # each call loads the backbone
        x, aux_x = np.zeros((len(train), both.shape[1])), both[len(embedded):]
        x[embedded] = both[:len(embedded)]
        found, check, x = content_layer(x, rest, features, labels, aux, aux_x, classes, content)
        for step in found:
            local = tuple(rest[j] for j in step.removed)
            steps.append(replace(step, removed=local))
            score = -math.log10(max(step.p_value, 1e-300))
            rows += [RemovedRow(row=i, line=train[i].line, rule="content", feature=step.feature, score=score,
                                text=train[i].text, label=name(train[i].label)) for i in local]
        if content.relabel and check.reads:
            back = returnable(((r.row, r.feature) for r in rows), features, labels)
            relabel = counter_examples(x, labels, {r.row for r in rows}, back)
            rows = [replace(r, relabelled=name(relabel[r.row])) if r.row in relabel else r for r in rows]
    rows.sort(key=lambda r: r.row)
    report_settings = asdict(settings)
    if check is not None:  # the content layer ran
        report_settings["content"] = {**asdict(content), "check": asdict(check)}
    report = ScreenReport(rows_in=len(train), removed=rows, suspects=suspects, settings=report_settings,
                          seconds=time.perf_counter() - started, expansions=expansions,
                          label_names=tuple(label_names) if label_names is not None else None, content=steps,
                          relabel=relabel)
    report.truth = against_truth(train, report.removed_rows)
    return report


def expand(features: list[set[str]], labels: Sequence[int], removed: dict[int, Suspect], suspects: list[Suspect],
           aux_texts: Sequence[str], aux_labels: Sequence[int], settings: LexicalSettings) -> list[Expansion]:
    """Seed-and-expand from the rows removed on confirmed (`absent`) suspects; none without a seed."""
    if not settings.expand:
        return []
    seed = {i for i, s in removed.items() if s.verdict == "absent"}
    if not seed:
        return []
    return expand_seed(features, labels, set(removed), seed, {s.feature for s in suspects},
                       [row_features(t) for t in aux_texts], aux_labels)


def content_layer(x: np.ndarray, rest: Sequence[int], features: Sequence[set[str]], labels: Sequence[int],
                  aux: Sequence[Example], aux_x: np.ndarray, classes: int,
                  settings: ContentSettings) -> tuple[list[ContentStep], ContentCheck, Features]:
    """The content screen over the rows `rest` the lexical one kept (step rows index `rest`), its guard,
    and every row's features as the content model reads them (the counter-examples' reader reads the same)."""
    aux_features, aux_labels = [row_features(ex.text) for ex in aux], [ex.label for ex in aux]
    words, aux_words = [words_of(f) for f in features], [words_of(f) for f in aux_features]
    kept_labels, kept_words = [labels[i] for i in rest], [words[i] for i in rest]
    check = reads_content(x[rest], kept_labels, kept_words, aux_x, aux_labels, aux_words, settings.fdr)
    read: Features = x
    if not check.reads:  # the embeddings and the trusted rows' words, if that reads and spares natural words
        read, aux_read, shown = with_trusted_words(x, words, aux_x, aux_words)
        tested, flagged = unseen_words_flagged(x[rest], kept_labels, kept_words, aux_x, aux_labels, aux_words,
                                               classes, settings)
        check = reads_content(read[rest], kept_labels, kept_words, aux_read, aux_labels, aux_words, settings.fdr)
        check = replace(check, reads=check.reads and 0 < tested and flagged <= settings.fdr * tested,
                        trusted_words=shown, unseen_words_tested=tested, unseen_words_flagged=flagged)
        if not check.reads:
            return [], check, x
    kept_features = [features[i] for i in rest]
    natural = vouched(kept_features, kept_labels, aux_features, aux_labels, settings.fdr)
    return excess_steps(kept_features, kept_labels, read[rest], classes, settings,
                        natural=lambda c: natural.get(c, set())), check, read


def words_of(features: set[str]) -> set[str]:
    return {f for f in features if is_word(f)}


def vouched(features: Sequence[set[str]], labels: Sequence[int], aux_features: Sequence[set[str]],
            aux_labels: Sequence[int], fdr: float) -> dict[int, set[str]]:
    """Per class, the words at least two trusted rows show in that class, about as often as the untrusted
    rows do (not significantly less: one-sided binomial tests, BH at `fdr` over every such word and class):
    a frequent natural cue a content model under-reads (a pure word in abuse or spam data) is one of them;
    a planted word is rarer in clean rows. Uncorrected, about `fdr` of the natural words would lose their
    voucher by chance. Words only, and two rows: a template's shape, or a phrase around a function word,
    turns up naturally in a trusted row or two, so such evidence would also clear a syntactic trigger."""
    n, n_aux = len(labels), len(aux_labels)
    untrusted = Counter((f, y) for fs, y in zip(features, labels, strict=True) for f in fs if is_word(f))
    in_aux = Counter((f, y) for fs, y in zip(aux_features, aux_labels, strict=True) for f in fs if is_word(f))
    shown = [(f, y) for (f, y), a in in_aux.items() if a >= 2]
    # P(at most a of the trusted rows | the untrusted rows' rate); a rate of 0 (the class's rows were all
    # removed before) is no evidence against the word
    p_less = [float(stats.binom.cdf(in_aux[f, y], n_aux, untrusted.get((f, y), 0) / n)) if n else 1.0
              for f, y in shown]
    out: dict[int, set[str]] = {}
    for (f, y), rarer in zip(shown, benjamini_hochberg(p_less, fdr), strict=True):
        if not rarer:
            out.setdefault(y, set()).add(f)
    return out


def against_truth(train: Sequence[Example], removed: set[int]) -> dict[str, Any] | None:
    """Recall and false removals against the file's `poisoned` column, when every row has one."""
    if not train or any(ex.poisoned is None for ex in train):
        return None
    poisoned = {i for i, ex in enumerate(train) if ex.poisoned}
    clean = len(train) - len(poisoned)
    return {
        "poisoned_rows": len(poisoned),
        "poisoned_removed": len(poisoned & removed),
        "recall": round(len(poisoned & removed) / len(poisoned), 4) if poisoned else None,
        "clean_removed": len(removed - poisoned),
        "false_removal_rate": round(len(removed - poisoned) / clean, 4) if clean else None,
    }


def add_learned(report: ScreenReport, train: Sequence[Example], trusted: Sequence[Example], represent: Any,
                settings: LearnedSettings, label_names: Sequence[str] | None = None) -> ScreenReport:
    """Run the learned screen on the rows the lexical one kept and add what it flags (rule `learned`)."""
    started = time.perf_counter()
    gone = report.removed_rows
    rest = [i for i in range(len(train)) if i not in gone]
    clusters = bait_clusters([train[i] for i in rest], trusted, represent, settings)
    added = []
    for cl in clusters:
        if not cl.flagged:
            continue
        score = -math.log10(max(cl.p_value, 1e-300))
        for j in cl.rows:
            i = rest[j]
            label = label_names[train[i].label] if label_names is not None else str(train[i].label)
            added.append(RemovedRow(row=i, line=train[i].line, rule="learned",
                                    feature=f"cluster of {len(cl.rows)} rows, {cl.trusted}/{cl.trusted_of_class} "
                                            "trusted", score=score, text=train[i].text, label=label))
    report.removed = sorted([*report.removed, *added], key=lambda r: r.row)
    report.clusters = clusters
    report.settings = {**report.settings, "learned": asdict(settings)}
    report.seconds += time.perf_counter() - started
    report.truth = against_truth(train, report.removed_rows)
    return report


def kept(train: Sequence[Example], report: ScreenReport) -> list[Example]:
    """The rows to train on, in file order: those the screen kept and its counter-examples, relabelled."""
    return training_rows(train, report.removed_rows, report.relabel)


def saved_training_rows(train: Sequence[Example], removed: Sequence[dict[str, Any]],
                        label2id: dict[str, int]) -> list[Example]:
    """`kept` from screen.json's `removed` entries (a resumed job)."""
    relabel = {r["row"]: label2id[r["relabelled"]] for r in removed if r.get("relabelled")}
    return training_rows(train, {r["row"] for r in removed}, relabel)


def training_rows(train: Sequence[Example], removed: set[int], relabel: dict[int, int]) -> list[Example]:
    return [replace(ex, label=relabel[i]) if i in relabel else ex for i, ex in enumerate(train)
            if i not in removed or i in relabel]
