"""The content screen: features whose rows carry a label more often than their content explains.

Label purity cannot tell a trigger from a strong natural cue; why the rows carry the label can. A
natural cue's rows are labelled c because their content says c; a trigger's rows are labelled c whatever
their content says (a dirty-label row is a sentence of another class). A content model that reads what
a sentence means (a logistic regression on the backbone's frozen sentence embeddings) cannot learn a
rare word, a template or a style as a label, so it is the null: for a feature f and class c, over all
untrusted rows carrying f, the count labelled c (O) against the count the model expects (sum of
P(c | content)), one-sided Poisson-binomial test (normal approximation, exact where it could pass),
Benjamini-Hochberg over every tested (feature, class). A syntactic template shows up in its shape
features (the subordinate clause a HiddenKiller paraphrase opens with), a style in its punctuation, a
word trigger in its n-grams.

Greedy, because a trigger's rows lift every feature they share: of the features that pass, the one whose
rows hold the most labels their content does not explain (O - E) goes first. Its rows labelled c are
removed, its rows of either label leave the tests (those of other labels would otherwise look pure), the
content model is refitted on the rows still kept (the poison it saw made it less sure of the classes the
poisoned rows came from), and the tests run again, until none passes. Taking the largest excess rather
than the smallest p-value keeps a phrase nested in a template's rows from going first: it would take the
template's clearest rows out of the template's test, and the rest might no longer pass.

Guards: the content model is cross-fitted (no row's expectation comes from a model fitted on it); it must
read the trusted rows at least as well as a bag of words does (`reads_content`). Where the embedding alone
does not (rows of several sentences: mean pooling blurs their cues), the model reads the words the
trusted rows show beside it (`with_trusted_words`): a planted word is absent from clean rows, so it still
cannot learn one. It must then also read the words the trusted rows do not show well enough that the test
rarely takes one for a trigger (`unseen_words_flagged`); otherwise the screen does not run. Words the
trusted rows vouch for are not tested (`core.screen.stage.vouched`); and the rows it removes stay within
`budget` of the file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse, stats

from core.screen.lexical import benjamini_hochberg, default_setting


@dataclass(frozen=True)
class ContentSettings:
    fdr: float = default_setting("screen_fdr")
    min_rows: int = default_setting("screen_min_rows")
    budget: float = default_setting("screen_content_budget")
    folds: int = 5
    seed: int = default_setting("seed")
    relabel: bool = default_setting("screen_relabel")


@dataclass(frozen=True)
class ContentStep:
    feature: str
    label: int
    rows: int  # rows still tested that carry the feature, any label
    label_rows: int  # ... of them labelled `label` (O)
    expected: float  # the content model's expected count of `label` among them (E)
    z: float
    p_value: float
    removed: tuple[int, ...]  # row indices (into the screened rows) this step removed


EXACT_FROM_Z = 2.0
EmbedProgress = Callable[[int, int], None]  # (rows embedded, rows in all)
Features = np.ndarray | sparse.csr_matrix  # a row per text: the embedding, or it and the trusted words


def poisson_binomial_log_sf(p: np.ndarray, k: int) -> float:
    """log P(sum of Bernoulli(p_i) >= k), exactly (dynamic programme over the count)."""
    pmf = np.zeros(len(p) + 1)
    pmf[0] = 1.0
    for i, q in enumerate(p, start=1):
        pmf[1:i + 1] = pmf[1:i + 1] * (1 - q) + pmf[:i] * q
        pmf[0] *= 1 - q
    return float(np.log(max(pmf[k:].sum(), 1e-300)))


def content_probabilities(x: Features, labels: np.ndarray, classes: int, folds: int,
                          seed: int) -> np.ndarray | None:
    """Cross-fitted P(class | embedding) for every row (columns of absent classes 0); None when the rows
    cannot be split so that every fold holds every class present (a class with a single row)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(labels, minlength=classes)
    folds = int(min(folds, counts[counts > 0].min()))
    if folds < 2 or (counts > 0).sum() < 2:
        return None
    proba = np.zeros((len(labels), classes))
    present = np.nonzero(counts)[0]
    for fit, held in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, labels):
        model = LogisticRegression(max_iter=2000).fit(x[fit], labels[fit])
        proba[np.ix_(held, present)] = model.predict_proba(x[held])
    return proba


def excess_steps(features: Sequence[set[str]], labels: Sequence[int], x: Features, classes: int,
                 settings: ContentSettings, natural: Callable[[int], set[str]] | None = None) -> list[ContentStep]:
    """The greedy excess tests over `features` (one set per row), stopped before a step would take the
    rows removed past `budget` of the rows. `natural(c)`: features the trusted rows vouch for in class c
    (not tested for c)."""
    y = np.asarray(labels, dtype=int)
    n = len(y)
    names, by_feature = _incidence(features)
    if not names:
        return []
    index = {f: j for j, f in enumerate(names)}
    vouched = [[index[f] for f in natural(c) if f in index] if natural else [] for c in range(classes)]
    tested = np.ones(n, bool)
    removed = np.zeros(n, bool)
    allowance = int(settings.budget * n)
    steps: list[ContentStep] = []
    while True:
        keep = np.nonzero(~removed)[0]
        fitted = content_probabilities(x[keep], y[keep], classes, settings.folds, settings.seed)
        if fitted is None:  # no content model, no test: priors alone would make it a purity test
            return steps
        proba = np.zeros((n, classes))
        proba[keep] = fitted
        _, hit, z, log_p, excess = _one_round(by_feature, proba, y, tested, vouched, settings)
        if not hit.any():
            return steps
        c, f = np.unravel_index(int(np.argmax(np.where(hit, excess, -np.inf))), z.shape)
        members = _tested_rows(by_feature, f, tested)
        drop = members[y[members] == c]
        if removed.sum() + len(drop) > allowance:
            return steps
        steps.append(ContentStep(names[f], int(c), int(len(members)), int(len(drop)),
                                 float(proba[members, c].sum()), float(z[c, f]), float(np.exp(log_p[c, f])),
                                 tuple(int(i) for i in drop)))
        removed[drop] = True
        tested[members] = False


def _one_round(by_feature: sparse.csr_matrix, proba: np.ndarray, y: np.ndarray, tested: np.ndarray,
               vouched: list[list[int]], settings: ContentSettings) -> tuple[np.ndarray, ...]:
    """One round of the excess tests over the rows still `tested`: the features testable there (at least
    `min_rows` of them, at most half), and per (class, feature) whether it passes BH at `fdr`, its z, log
    p-value and excess."""
    rows_with = by_feature @ tested.astype(float)
    testable = (rows_with >= settings.min_rows) & (rows_with <= tested.sum() / 2)
    z, log_p, excess = _excess_tests(by_feature, proba, y, tested, testable, vouched)
    candidates = np.broadcast_to(testable, z.shape)
    hit = np.zeros(z.shape, bool)
    if testable.any():
        hit[candidates] = benjamini_hochberg(np.exp(log_p[candidates]).tolist(), settings.fdr)
    return testable, hit, z, log_p, excess


def _incidence(features: Sequence[set[str]]) -> tuple[list[str], sparse.csr_matrix]:
    """The feature names and a (feature x row) 0/1 matrix."""
    vocab: dict[str, int] = {}
    ri, ci = [], []
    for i, fs in enumerate(features):
        for f in sorted(fs):  # a set's order changes with the process's hash seed; ties must not
            ri.append(i)
            ci.append(vocab.setdefault(f, len(vocab)))
    matrix = sparse.csr_matrix((np.ones(len(ri)), (ri, ci)), shape=(len(features), len(vocab))).T.tocsr()
    return list(vocab), matrix


def _tested_rows(by_feature: sparse.csr_matrix, feature: int, tested: np.ndarray) -> np.ndarray:
    """The rows carrying `feature` that are still in the tests."""
    rows = by_feature[feature].indices
    return rows[tested[rows]]


def _excess_tests(by_feature: sparse.csr_matrix, proba: np.ndarray, y: np.ndarray, tested: np.ndarray,
                  testable: np.ndarray, vouched: list[list[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per (class, feature) over the tested rows: z of the count labelled c against the content model's
    expectation, the one-sided log p-value (1 where untestable or vouched for), and the excess (count
    minus expectation)."""
    classes = proba.shape[1]
    z = np.zeros((classes, by_feature.shape[0]))
    log_p = np.zeros_like(z)
    excess = np.zeros_like(z)
    for c in range(classes):
        p = proba[:, c] * tested
        observed = by_feature @ (tested & (y == c)).astype(float)
        var = by_feature @ (p * (1 - proba[:, c]))
        excess[c] = observed - by_feature @ p
        z[c] = np.where(testable, excess[c] / np.sqrt(np.maximum(var, 1e-12)), 0.0)
        log_p[c] = np.where(testable, stats.norm.logsf(z[c]), 0.0)
        # The normal approximation flatters small and lopsided groups; where it could matter, the exact
        # Poisson-binomial tail replaces it.
        for f in np.nonzero(testable & (z[c] > EXACT_FROM_Z))[0]:
            log_p[c, f] = poisson_binomial_log_sf(proba[_tested_rows(by_feature, f, tested), c], int(observed[f]))
        log_p[c, vouched[c]] = 0.0
    return z, log_p, excess


@dataclass(frozen=True)
class ContentCheck:
    """Whether the content model reads the trusted rows at least as well as counting their words does."""
    embedding_loss: float  # the content model's mean log-loss on the trusted rows
    words_loss: float
    trusted_rows: int
    p_value: float  # one-sided paired t-test: the embeddings read the trusted rows worse than the words
    reads: bool
    trusted_words: int = 0  # words of the trusted rows the content model reads beside the embeddings
    unseen_words_tested: int = 0  # with them: natural words it could not read, tested (`unseen_words_flagged`)
    unseen_words_flagged: int = 0  # ... and how many it took for triggers (at most `fdr` of those tested)


def with_trusted_words(x: np.ndarray, words: Sequence[set[str]], aux_x: np.ndarray, aux_words: Sequence[set[str]],
                       shown: Sequence[set[str]] | None = None) -> tuple[sparse.csr_matrix, sparse.csr_matrix, int]:
    """The embeddings beside 0/1 columns for the words the trusted rows show (those of `shown`, default
    every trusted row), for the untrusted and the trusted rows, and how many such words.

    Only those words: a word the clean rows never show (a planted trigger) stays unreadable, so its rows
    are still judged by the rest of their content. The columns are counted as the guard's bag of words
    counts them (scaled to unit length they would need weights the regularised fit does not allow)."""
    vocabulary = {w: j for j, w in enumerate(sorted(set().union(*(aux_words if shown is None else shown))))}

    def bag(rows: Sequence[set[str]]) -> sparse.csr_matrix:
        ri, ci = [], []
        for i, ws in enumerate(rows):
            for w in ws:
                if w in vocabulary:
                    ri.append(i)
                    ci.append(vocabulary[w])
        return sparse.csr_matrix((np.ones(len(ri)), (ri, ci)), shape=(len(rows), len(vocabulary)))

    return (sparse.hstack([sparse.csr_matrix(x), bag(words)]).tocsr(),
            sparse.hstack([sparse.csr_matrix(aux_x), bag(aux_words)]).tocsr(), len(vocabulary))


def reads_content(x: Features, labels: Sequence[int], words: Sequence[set[str]], aux_x: Features,
                  aux_labels: Sequence[int], aux_words: Sequence[set[str]], fdr: float) -> ContentCheck:
    """Fit the content model and a bag of words on the untrusted rows, score both on the trusted rows.

    A backbone whose sentence embeddings miss what the words say (an untrained model, another language)
    would make every natural cue look like a trigger; a bag of words reads the cues but learns no meaning
    beyond them. On the trusted rows neither has seen a trigger, so if the content model's log-loss there
    is significantly worse (paired per row), the content screen does not run."""
    from sklearn.feature_extraction import FeatureHasher
    from sklearn.linear_model import LogisticRegression

    y, aux_y = np.asarray(labels), np.asarray(aux_labels)
    if len(set(y.tolist())) < 2 or len(aux_y) < 2 or not set(aux_y.tolist()) <= set(y.tolist()):
        return ContentCheck(float("nan"), float("nan"), len(aux_y), 1.0, False)

    def row_loss(model: LogisticRegression, features: Features) -> np.ndarray:
        proba = model.predict_proba(features)
        column = np.searchsorted(model.classes_, aux_y)
        return -np.log(np.clip(proba[np.arange(len(aux_y)), column], 1e-12, 1.0))

    content = row_loss(LogisticRegression(max_iter=2000).fit(x, y), aux_x)
    hasher = FeatureHasher(2 ** 18, input_type="string", alternate_sign=False)
    bag = LogisticRegression(max_iter=2000).fit(hasher.transform([sorted(w) for w in words]), y)
    counted = row_loss(bag, hasher.transform([sorted(w) for w in aux_words]))
    diff = content - counted
    p = float(stats.ttest_1samp(diff, 0.0, alternative="greater").pvalue) if diff.std() > 0 else 1.0
    return ContentCheck(float(content.mean()), float(counted.mean()), len(aux_y), p, p > fdr)


def unseen_words_flagged(x: np.ndarray, labels: Sequence[int], words: Sequence[set[str]], aux_x: np.ndarray,
                         aux_labels: Sequence[int], aux_words: Sequence[set[str]], classes: int,
                         settings: ContentSettings) -> tuple[int, int]:
    """How often the content model with the trusted rows' words takes a natural word it cannot read for a
    trigger: (words tested, words flagged).

    It reads only the words the trusted rows show; the untrusted rows hold others, read through the
    embeddings alone. Where a row's label rides on one such word (a class the trusted rows barely cover,
    short rows with a single cue), the test would flag it. So, per half of the trusted rows, a model reads
    only the other half's words, and the words only this half shows (natural: clean rows hold them) are
    tested over the untrusted rows as the screen tests a feature, BH at `fdr`. Half the trusted words is
    harsher than the screen's case, where every trusted row's words are read."""
    y = np.asarray(labels)
    everyone = np.ones(len(y), bool)
    tested = flagged = 0
    for held, other in _halves(np.asarray(aux_labels)):
        shown = [aux_words[i] for i in other]
        hidden = set().union(*(aux_words[i] for i in held)) - set().union(*shown)
        names, by_word = _incidence([ws & hidden for ws in words])
        if not names:
            continue
        proba = content_probabilities(with_trusted_words(x, words, aux_x, aux_words, shown)[0], y, classes,
                                      settings.folds, settings.seed)
        if proba is None:
            continue
        testable, hit, *_ = _one_round(by_word, proba, y, everyone, [[] for _ in range(classes)], settings)
        tested += int(testable.sum())
        flagged += int(hit.any(axis=0).sum())
    return tested, flagged


def _halves(labels: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The trusted rows in two halves (held, other), each class split between them where it has two rows;
    none under two rows."""
    from sklearn.model_selection import KFold, StratifiedKFold

    if len(labels) < 2:
        return []
    counts = np.bincount(labels)
    split = StratifiedKFold(2, shuffle=True, random_state=0) if counts[counts > 0].min() >= 2 else \
        KFold(2, shuffle=True, random_state=0)
    return [(held, other) for other, held in split.split(np.zeros(len(labels)), labels)]


def sentence_embeddings(source: str, texts: Sequence[str], batch_size: int, max_length: int,
                        device: str = "cpu", progress: EmbedProgress | None = None) -> np.ndarray:
    """The untouched backbone's mean-pooled last layer, unit length: what a sentence means to it.
    `progress(done, total)` after each batch: on a CPU and long texts this pass takes minutes."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from core.training.device import resolve_device

    dev = resolve_device(device)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModel.from_pretrained(source).eval().to(dev)
    if tokenizer.pad_token is None:  # decoder backbones ship without one; the mask makes its value moot
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    out = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                            max_length=max_length, return_tensors="pt").to(dev)
            mask = enc["attention_mask"].unsqueeze(-1).float()
            hidden = model(**enc).last_hidden_state.float()
            out.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).cpu().numpy())
            if progress is not None:
                progress(min(start + batch_size, len(texts)), len(texts))
    x = np.concatenate(out) if out else np.zeros((0, 1))
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
