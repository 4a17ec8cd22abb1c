"""The lexical and structural screen: features whose label purity is too high to be natural.

For each feature f (core/screen/features.py) and class c, with n_f untrusted rows carrying f and k of
them labelled c, the screen tests H0: P(c | f) <= ceiling(c) against "purer than that", one-sided
binomial, where ceiling(c) = prior(c) + purity * (1 - prior(c)): a share `purity` of the way from the
class's base rate to perfect purity, so the same setting scales to balanced, imbalanced and many-class
files. Benjamini-Hochberg keeps the expected share of natural features among the suspects at `fdr`,
over the features that could pass at all (`tarone_bar`); words that come together are tested as one
(core/screen/cooccur.py).

A strong natural cue (a slur in abusive-language data, a spam phrase) passes that test as well as a
trigger does. The trusted aux rows tell them apart where they can: a natural feature turns up there at
about its untrusted rate, a planted one does not (the aux file is clean). Each suspect gets a verdict:
  absent     aux holds it significantly less often than its untrusted rate predicts (BH at `fdr`):
             a trigger; its rows are removed whatever their number.
  natural    aux holds it in a row of the same class, at a rate that is not significantly low: kept.
  unverified aux is too small to tell (the feature is rare): its rows are removed, strongest first,
             only while the rows removed on such evidence stay within `budget` of the file, which bounds
             what a natural cue can cost.
Only the rows labelled c are removed: the feature's rows of other classes do not teach the backdoor.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from scipy import stats

from core.config import TrainConfig
from core.screen.cooccur import with_groups, word_groups
from core.screen.features import feature_kind, is_word, row_features


def default_setting(field: str) -> Any:
    """The settings' single source is TrainConfig (documented there; `muscle settings` lists them)."""
    return TrainConfig.model_fields[field].default


@dataclass(frozen=True)
class LexicalSettings:
    fdr: float = default_setting("screen_fdr")
    purity: float = default_setting("screen_purity")
    budget: float = default_setting("screen_budget")
    min_rows: int = default_setting("screen_min_rows")
    expand: bool = default_setting("screen_expand")  # seed-and-expand from confirmed suspects (expand.py)


@dataclass(frozen=True)
class Suspect:
    feature: str
    label: int
    rows: int  # untrusted rows with the feature
    label_rows: int  # ... of them labelled `label`
    purity: float
    ceiling: float
    p_value: float
    aux_rows: int  # aux rows with the feature
    aux_label_rows: int
    aux_p_value: float  # P(aux count <= observed) at the untrusted rate
    verdict: str  # absent | natural | unverified
    removed: int = 0  # rows this suspect removed (not already removed by a stronger one)

    @property
    def rule(self) -> str:
        return feature_kind(self.feature)

    @property
    def score(self) -> float:
        """Evidence strength for reports and ordering: -log10 of the purity test's p-value."""
        import math

        return -math.log10(max(self.p_value, 1e-300))


def benjamini_hochberg(p_values: Sequence[float], fdr: float) -> list[bool]:
    """Which hypotheses BH rejects at level `fdr` (step-up)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    m = len(p_values)
    cutoff = 0
    for rank, i in enumerate(order, start=1):
        if p_values[i] <= fdr * rank / m:
            cutoff = rank
    keep = [False] * m
    for i in order[:cutoff]:
        keep[i] = True
    return keep


def _index(texts: Sequence[str]) -> list[set[str]]:
    return [row_features(t) for t in texts]


def _counts(features: Sequence[set[str]], labels: Sequence[int]) -> tuple[Counter[str], dict[str, Counter[int]]]:
    """Rows per feature, and per feature rows per label."""
    count: Counter[str] = Counter()
    by_label: dict[str, Counter[int]] = defaultdict(Counter)
    for fs, y in zip(features, labels, strict=True):
        for f in fs:
            count[f] += 1
            by_label[f][y] += 1
    return count, by_label


def natural_ceiling(count: Counter[str], by_label: dict[str, Counter[int]], prior: dict[int, float],
                    settings: LexicalSettings, vouched: dict[int, set[str]]) -> dict[int, float]:
    """Per class, the purity a suspect must beat: `purity` of the way from the base rate to 1, or, where
    the file's own cues are purer, the median purity (its lower confidence bound) of its single words
    associated with the class (a binomial test against the base rate, BH at `fdr`): ordinary words in
    spam or abuse data sit there.
    Only words the trusted rows show in that class count (`vouched`): otherwise a trigger, which covers
    many rows of a small file, would set the bar at its own purity. Single words only: an inserted word
    makes hundreds of pure n-grams with its random neighbours."""
    tests = [(f, c, nf, k) for f, nf in count.items() if nf >= settings.min_rows and is_word(f)
             for c, k in by_label[f].items() if k / nf > prior[c]]
    p_values = [float(stats.binom.sf(k - 1, nf, prior[c])) for _f, c, nf, k in tests]
    associated: dict[int, list[tuple[float, int]]] = defaultdict(list)
    for (f, c, nf, k), hit in zip(tests, benjamini_hochberg(p_values, settings.fdr), strict=True):
        if hit and f in vouched.get(c, set()):
            # the purity the word surely reaches (one-sided Clopper-Pearson bound): a word seen on a dozen
            # rows says less about how pure natural cues get than one seen on hundreds
            associated[c].append((float(stats.beta.ppf(settings.fdr, k, nf - k + 1)), nf))
    return {c: max(p + settings.purity * (1 - p), weighted_median(associated[c])) for c, p in prior.items()}


def weighted_median(values: list[tuple[float, int]]) -> float:
    """The median of (value, weight) pairs; 0 when there are none. Weighting by rows lets the file's
    common words, not its many rare ones (pure by chance), say how pure a natural cue is."""
    total = sum(w for _v, w in values)
    seen = 0
    for v, w in sorted(values):
        seen += w
        if 2 * seen >= total:
            return v
    return 0.0


def tarone_bar(features: Sequence[set[str]], count: Counter[str], by_label: dict[str, Counter[int]],
               ceiling: dict[int, float], settings: LexicalSettings, skip: set[str]) -> tuple[float, int]:
    """Tarone's rule for discrete tests (Gilbert's FDR form): (bar, m). A feature on nf rows, all of its
    class c, reaches at best p = ceiling(c) ** nf, so a rare one can never pass and should not dilute the
    correction. m is the smallest count with at most m features whose best p is <= fdr / m; BH then runs
    over those m (bar = fdr / m). Each distinct row set counts once, under its majority class; no label
    but that choice is looked at."""
    signature: dict[str, int] = {}
    wanted = {f for f, nf in count.items() if nf >= settings.min_rows and f not in skip}
    for i, fs in enumerate(features):
        for f in fs & wanted:
            signature[f] = hash((signature.get(f, 0), i))
    best: dict[int, float] = {}
    for f, sig in signature.items():
        c, _k = by_label[f].most_common(1)[0]
        best.setdefault(sig, ceiling[c] ** count[f])
    ordered = sorted(best.values())
    for m in range(1, len(ordered) + 1):  # returns by m = len(ordered) at the latest
        passing = bisect.bisect_right(ordered, settings.fdr / m)
        if passing <= m:
            return settings.fdr / m, passing
    return settings.fdr, 0  # no feature on `min_rows` rows


def find_suspects(texts: Sequence[str], labels: Sequence[int], aux_texts: Sequence[str],
                  aux_labels: Sequence[int], settings: LexicalSettings) -> tuple[list[Suspect], list[set[str]]]:
    """The suspects (strongest first) and each untrusted row's feature set (with its word groups).

    Features that mark exactly the same rows of a class (the n-grams of one inserted phrase) are one
    hypothesis, reported under the shortest of them, so a long trigger does not loosen BH for the rest;
    words that come together (core/screen/cooccur.py) are one hypothesis too, tested on all their rows."""
    n = len(texts)
    features = _index(texts)
    groups = word_groups(features, settings.min_rows, settings.fdr)
    features = with_groups(features, groups)
    grouped = set().union(*groups.values())
    count, by_label = _counts(features, labels)
    prior = {c: k / n for c, k in Counter(labels).items()}
    aux_features = with_groups(_index(aux_texts), groups)
    vouched: dict[int, set[str]] = defaultdict(set)
    for fs, y in zip(aux_features, aux_labels, strict=True):
        vouched[y] |= fs
    ceiling = natural_ceiling(count, by_label, prior, settings, vouched)
    bar, tested = tarone_bar(features, count, by_label, ceiling, settings, grouped)

    candidates = {(f, c) for f, nf in count.items() if nf >= settings.min_rows and f not in grouped
                  for c, k in by_label[f].items() if k / nf > ceiling[c] and ceiling[c] ** nf <= bar}
    if not candidates:
        return [], features
    wanted = {f for f, _c in candidates}
    rows_of: dict[str, list[int]] = defaultdict(list)
    for i, fs in enumerate(features):
        for f in fs & wanted:
            rows_of[f].append(i)
    hypotheses: dict[tuple[int, tuple[int, ...]], str] = {}
    for f, c in sorted(candidates, key=lambda fc: (len(fc[0]), fc[0])):
        hypotheses.setdefault((c, tuple(i for i in rows_of[f] if labels[i] == c)), f)
    chosen = [(f, c, count[f], by_label[f][c]) for (c, _rows), f in hypotheses.items()]
    p_values = [float(stats.binom.sf(k - 1, nf, ceiling[c])) for _f, c, nf, k in chosen]
    # the testable features that are not candidates (purity under the ceiling) count with p = 1
    padded = p_values + [1.0] * max(0, tested - len(p_values))
    hits = [(t, p) for t, p, r in zip(chosen, p_values, benjamini_hochberg(padded, settings.fdr), strict=False)
            if r]
    if not hits:
        return [], features

    n_aux = len(aux_texts)
    aux_p: list[float] = []
    aux_counts: list[tuple[int, int]] = []
    for (f, c, nf, _k), _p in hits:
        rows = [y for fs, y in zip(aux_features, aux_labels, strict=True) if f in fs]
        aux_counts.append((len(rows), sum(1 for y in rows if y == c)))
        aux_p.append(float(stats.binom.cdf(len(rows), n_aux, nf / n)) if n_aux else 1.0)
    absent = benjamini_hochberg(aux_p, settings.fdr)

    suspects = []
    for ((f, c, nf, k), p), (a, ac), ap, is_absent in zip(hits, aux_counts, aux_p, absent, strict=True):
        verdict = "absent" if is_absent else ("natural" if ac > 0 else "unverified")
        suspects.append(Suspect(f, c, nf, k, k / nf, ceiling[c], p, a, ac, ap, verdict))
    suspects.sort(key=lambda s: (s.p_value, -s.rows, s.feature))
    return suspects, features


def choose_removals(suspects: list[Suspect], features: list[set[str]], labels: Sequence[int],
                    budget: float) -> tuple[list[Suspect], dict[int, Suspect]]:
    """Rows to remove, each with the strongest suspect that removed it; suspects with their counts.

    Confirmed (`absent`) suspects go first and are not limited; `unverified` ones follow, strongest first,
    each taken whole or not at all, while the rows they add stay within `budget` of the file."""
    removed: dict[int, Suspect] = {}
    out: list[Suspect] = []
    allowance = int(budget * len(labels))
    spent = 0
    ordered = ([s for s in suspects if s.verdict == "absent"] + [s for s in suspects if s.verdict == "unverified"]
               + [s for s in suspects if s.verdict == "natural"])
    for s in ordered:
        if s.verdict == "natural":
            out.append(s)
            continue
        rows = [i for i, (fs, y) in enumerate(zip(features, labels, strict=True))
                if y == s.label and s.feature in fs and i not in removed]
        if s.verdict == "unverified":
            if spent + len(rows) > allowance:
                out.append(s)
                continue
            spent += len(rows)
        for i in rows:
            removed[i] = s
        out.append(_with_removed(s, len(rows)))
    out.sort(key=lambda s: (s.p_value, -s.rows, s.feature))
    return out, removed


def _with_removed(s: Suspect, removed: int) -> Suspect:
    from dataclasses import replace

    return replace(s, removed=removed)
