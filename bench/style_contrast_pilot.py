"""Pilot: learn a style trigger from the default screen's removals against the *other* classes' rows.

The default screen removes the style rows that carry glued punctuation (StyleBkd: 395 of 615 at 10%);
the rest share the style but no single feature. Learning the removed rows against their own class's kept
rows (notes section 10) also learns their content: a dirty-label trigger's rows read as another class.
Here the removed rows of class c are learned against the kept rows of the other classes, whose content
they share, so what separates them is the style. Every kept row of class c is scored cross-fitted; the
trusted rows of class c give the threshold (their highest score). Representations: frozen sentence
embeddings, word 1-2-gram TF-IDF and character 2-5-gram TF-IDF of the text with punctuation split off (so
the glued marker itself is not learned).

    .venv/bin/python bench/style_contrast_pilot.py train-stylebkd-0.1 train-hiddenkiller-0.1 ...
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.content_disagreement import embeddings  # noqa: E402
from bench.screen_data import OUT  # noqa: E402
from bench.screen_eval import screened  # noqa: E402

_PUNCT = re.compile(r"\s*([,;:!?.])\s*")


def plain(text: str) -> str:
    return _PUNCT.sub(r" \1 ", text).strip()


def representations(texts: list[str], aux_texts: list[str]):  # noqa: ANN201
    from sklearn.feature_extraction.text import TfidfVectorizer

    out = {"embeddings": (embeddings(texts), embeddings(aux_texts))}
    for name, vec in (("words", TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)),
                      ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=3,
                                                sublinear_tf=True))):
        x = vec.fit_transform([plain(t) for t in texts])
        out[name] = (x, vec.transform([plain(t) for t in aux_texts]))
    return out


def pilot(name: str) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    train, aux, report = screened(OUT / f"{name}.tsv")
    removed = set(report.removed_rows)
    poisoned = np.array([bool(ex.poisoned) for ex in train])
    y = np.array([ex.label for ex in train])
    ay = np.array([ex.label for ex in aux])
    is_removed = np.array([i in removed for i in range(len(train))])
    print(f"{name}: removed {len(removed)} recall {report.truth['recall']} "
          f"false {report.truth['false_removal_rate']}")
    reps = representations([ex.text for ex in train], [ex.text for ex in aux])
    for c in sorted({int(y[i]) for i in removed}):
        seed = np.flatnonzero(is_removed & (y == c))
        if len(seed) < 5:
            continue
        for contrast in ("other", "own"):
            others = np.flatnonzero(~is_removed & ((y != c) if contrast == "other" else (y == c)))
            target = np.flatnonzero(~is_removed & (y == c))
            pool = np.concatenate([seed, others])
            is_seed = np.zeros(len(pool), dtype=bool)
            is_seed[: len(seed)] = True
            for rep, (x, ax) in reps.items():
                for c_reg in (0.1, 1.0):
                    score = np.zeros(len(y))
                    counts = np.zeros(len(y))
                    tmax = []
                    for fit, _ in StratifiedKFold(5, shuffle=True, random_state=0).split(np.zeros(len(pool)),
                                                                                          is_seed):
                        m = LogisticRegression(C=c_reg, class_weight="balanced", max_iter=3000)
                        m.fit(x[pool[fit]], is_seed[fit])
                        held = np.setdiff1d(target, pool[fit])
                        score[held] += m.decision_function(x[held])
                        counts[held] += 1
                        tmax.append(m.decision_function(ax[ay == c]).max())
                    s = score[target] / np.maximum(counts[target], 1)
                    p = poisoned[target]
                    auc = roc_auc_score(p, s) if 0 < p.sum() < len(p) else float("nan")
                    add = s > float(np.mean(tmax))
                    tops = []
                    for k in (50, 100, 200, 300):
                        tops.append(f"{p[np.argsort(-s)[:k]].sum()}/{k}")
                    print(f"  class {c} seed {len(seed)} vs {contrast:5s} {rep:10s} C={c_reg:<4}: left "
                          f"{p.sum()} AUC {auc:.3f}; above every aux row {add.sum()} "
                          f"({p[add].sum()} poisoned); top-k poisoned {' '.join(tops)}")


if __name__ == "__main__":
    for n in sys.argv[1:] or ["train-stylebkd-0.1"]:
        pilot(n)
