"""Pilot: does a feature's group of rows disagree with a content model more than its class does?

Label purity cannot tell a trigger from a strong natural cue: both put one label on their rows. What
differs is why. A natural cue's rows carry that label because their content says so; a trigger's rows
carry it whatever their content says (dirty-label rows were negative sentences). A content model that
cannot have learned any trigger (a logistic regression on frozen sentence embeddings, fitted on the
trusted aux rows only) should then agree with a natural cue's rows about as well as with the rest of
their class, and disagree with a trigger's rows far more.

Per file and class c, for every lexical/shape feature (`core.screen.features`) on at least `--min-rows`
rows labelled c: the mean P(not c) of those rows against the class's mean, as a z statistic (class
standard deviation / sqrt(n)), one-sided p, Benjamini-Hochberg over all features. Printed: the top
features with their poisoned counts, how many features pass at q = 0.05, and the recall / clean rows of
the union of the passing features' rows.

Second form (`--excess`): a content model cross-fitted on the untrusted rows themselves (5 folds, so
it is stronger and calibrated on the file), and per feature, over all its rows whatever their label,
the count labelled c against the count the content model expects (sum of P(c)): a trigger's rows carry
label c more often than their content explains, a natural cue's about as often. z = (O - E) / sqrt(sum
p(1 - p)), BH as above.

    .venv/bin/python bench/content_disagreement.py [--excess] hiddenkiller-0.1 stylebkd-0.01 clean
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.paraphrase_signals import DATA, read  # noqa: E402
from core.screen.features import row_features  # noqa: E402
from core.screen.lexical import benjamini_hochberg  # noqa: E402

CACHE = ROOT / "bench" / "runs" / "pilot" / "embeddings.npz"
CLEAN = ROOT.parent / "shared" / "data" / "sst2" / "train.tsv"


def embeddings(texts: list[str]) -> np.ndarray:
    from bench.paraphrase_signals import embed

    store: dict[str, np.ndarray] = {}
    if CACHE.exists():
        d = np.load(CACHE, allow_pickle=True)
        store = dict(zip(d["texts"].tolist(), d["x"], strict=True))
    missing = sorted({t for t in texts if t not in store})
    if missing:
        for t, v in zip(missing, embed(missing), strict=True):
            store[t] = v
        keys = list(store)
        np.savez(CACHE, texts=np.array(keys, dtype=object), x=np.stack([store[k] for k in keys]))
    return np.stack([store[t] for t in texts])


def bh(p: np.ndarray, q: float) -> np.ndarray:
    return np.array(benjamini_hochberg(p.tolist(), q), dtype=bool)


def excess(names: list[str]) -> int:
    from scipy.stats import norm
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    for name in names:
        rows = read(CLEAN) if name == "clean" else read(DATA / f"train-{name}.tsv")
        labels = np.array([int(r["label"]) for r in rows])
        poisoned = np.array([r.get("poisoned") == "1" for r in rows])
        x = embeddings([r["text"] for r in rows])
        proba = cross_val_predict(LogisticRegression(C=1.0, max_iter=5000), x, labels, cv=5, method="predict_proba")
        feats = [row_features(r["text"]) for r in rows]
        groups: dict[str, list[int]] = {}
        for i, fs in enumerate(feats):
            for f in fs:
                groups.setdefault(f, []).append(i)
        tests = []
        for f, idx in groups.items():
            if len(idx) < 10 or len(idx) > len(rows) / 2:
                continue
            for c in np.unique(labels):
                pc = proba[idx, c]
                o, e = int((labels[idx] == c).sum()), float(pc.sum())
                z = (o - e) / np.sqrt(max(float((pc * (1 - pc)).sum()), 1e-9))
                mine = [i for i in idx if labels[i] == c]
                tests.append((f, int(c), len(idx), o, e, float(z), float(norm.sf(z)), mine,
                              int(poisoned[mine].sum())))
        hit = bh(np.array([t[6] for t in tests]), 0.05)
        fl = np.zeros(len(rows), bool)
        for t, h in zip(tests, hit, strict=True):
            if h:
                fl[t[7]] = True
        print(json.dumps({"file": name, "mode": "excess", "rows": len(rows), "poisoned": int(poisoned.sum()),
                          "content_acc": round(float((proba.argmax(1) == labels).mean()), 3), "tests": len(tests),
                          "passed": int(hit.sum()), "flagged_rows": int(fl.sum()),
                          "recall": round(float(fl[poisoned].mean()), 3) if poisoned.any() else None,
                          "clean_removed": round(float(fl[~poisoned].mean()), 4)}), flush=True)
        for t in sorted(tests, key=lambda t: -t[5])[:12]:
            print(f"   {t[0]:<24} label {t[1]} rows {t[2]:>4} labelled {t[3]:>4} expected {t[4]:7.1f} "
                  f"z {t[5]:6.1f} poisoned {t[8]}")
    return 0


def greedy(names: list[str], q: float = 0.05, min_rows: int = 10, write_to: Path | None = None) -> int:
    """The excess test repeated: remove the label-c rows of the strongest passing feature, then test again
    without that feature's rows of either label (a trigger's rows lift every feature they share; once they
    are out of the test, so is the lift; keeping the other label's rows in would make them look pure)."""
    from scipy import sparse
    from scipy.stats import norm
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    for name in names:
        rows = read(CLEAN) if name == "clean" else read(DATA / f"train-{name}.tsv")
        labels = np.array([int(r["label"]) for r in rows])
        poisoned = np.array([r.get("poisoned") == "1" for r in rows])
        x = embeddings([r["text"] for r in rows])
        vocab: dict[str, int] = {}
        ri, ci = [], []
        for i, r in enumerate(rows):
            for f in row_features(r["text"]):
                ri.append(i)
                ci.append(vocab.setdefault(f, len(vocab)))
        m = sparse.csr_matrix((np.ones(len(ri)), (ri, ci)), shape=(len(rows), len(vocab))).T.tocsr()
        names_of = np.array(list(vocab))
        alive = np.ones(len(rows), bool)
        dropped = np.zeros(len(rows), bool)
        steps = []
        while True:
            # The content model is refitted on the rows still kept: poison it was fitted on makes it less
            # sure of the classes the trigger's rows came from, which lifts every cue of those classes.
            keep = np.nonzero(~dropped)[0]
            proba = np.zeros((len(rows), 2))
            proba[keep] = cross_val_predict(LogisticRegression(C=1.0, max_iter=5000), x[keep], labels[keep], cv=5,
                                            method="predict_proba")
            n = m @ alive.astype(float)
            best = None
            zs, ps, keys = [], [], []
            for c in np.unique(labels):
                pc = proba[:, c]
                o = m @ (alive & (labels == c)).astype(float)
                e = m @ (pc * alive)
                v = m @ (pc * (1 - pc) * alive)
                ok = (n >= min_rows) & (n <= alive.sum() / 2)
                z = np.where(ok, (o - e) / np.sqrt(np.maximum(v, 1e-9)), -np.inf)
                zs.append(z)
                ps.append(np.where(ok, norm.sf(z), 1.0))
                keys.append(np.full(len(z), c))
            z_all, p_all, c_all = np.concatenate(zs), np.concatenate(ps), np.concatenate(keys)
            tested = np.isfinite(z_all)
            hit = np.zeros(len(z_all), bool)
            hit[tested] = bh(p_all[tested], q)
            if not hit.any():
                break
            best = int(np.argmax(np.where(hit, z_all, -np.inf)))
            f, c = best % len(vocab), int(c_all[best])
            members = m[f].indices
            drop = members[alive[members] & (labels[members] == c)]
            steps.append((names_of[f], c, len(drop), int(poisoned[drop].sum()), round(float(z_all[best]), 1)))
            alive[members] = False
            dropped[drop] = True
        gone = dropped
        print(json.dumps({"file": name, "mode": "greedy", "q": q, "rows": len(rows), "poisoned": int(poisoned.sum()),
                          "steps": len(steps), "removed": int(gone.sum()),
                          "recall": round(float(gone[poisoned].mean()), 3) if poisoned.any() else None,
                          "clean_removed": round(float(gone[~poisoned].mean()), 4)}), flush=True)
        for st in steps[:25]:
            print(f"   {st[0]:<24} label {st[1]} removed {st[2]:>4} poisoned {st[3]:>4} z {st[4]}")
        if write_to is not None and name != "clean":
            import csv

            write_to.mkdir(parents=True, exist_ok=True)
            with open(write_to / f"train-{name}.tsv", "w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter="\t")
                w.writeheader()
                w.writerows(r for r, gone_row in zip(rows, gone, strict=True) if not gone_row)
    return 0


def main(names: list[str]) -> int:
    from scipy.stats import norm
    from sklearn.linear_model import LogisticRegressionCV

    if names and names[0] == "--greedy":
        return greedy(names[1:])
    if names and names[0].startswith("--greedy-write="):
        return greedy(names[1:], write_to=Path(names[0].split("=", 1)[1]))
    if names and names[0] == "--excess":
        return excess(names[1:])
    aux = read(DATA / "aux.tsv")
    content = LogisticRegressionCV(Cs=10, cv=5, max_iter=5000).fit(
        embeddings([r["text"] for r in aux]), [int(r["label"]) for r in aux])
    min_rows = 10
    for name in names:
        rows = read(CLEAN) if name == "clean" else read(DATA / f"train-{name}.tsv")
        labels = np.array([int(r["label"]) for r in rows])
        poisoned = np.array([r.get("poisoned") == "1" for r in rows])
        proba = content.predict_proba(embeddings([r["text"] for r in rows]))
        p_not = 1 - proba[np.arange(len(rows)), labels]
        feats = [row_features(r["text"]) for r in rows]
        tests = []
        for c in np.unique(labels):
            in_c = np.nonzero(labels == c)[0]
            base, sd = p_not[in_c].mean(), p_not[in_c].std()
            groups: dict[str, list[int]] = {}
            for i in in_c:
                for f in feats[i]:
                    groups.setdefault(f, []).append(i)
            for f, idx in groups.items():
                if len(idx) < min_rows or len(idx) > len(in_c) / 2:
                    continue
                z = (p_not[idx].mean() - base) / (sd / np.sqrt(len(idx)))
                tests.append((f, int(c), len(idx), int(poisoned[idx].sum()), float(p_not[idx].mean()), float(base),
                              float(z), float(norm.sf(z)), idx))
        p = np.array([t[7] for t in tests])
        hit = bh(p, 0.05)
        flagged = sorted({i for t, h in zip(tests, hit, strict=True) if h for i in t[8]})
        fl = np.zeros(len(rows), bool)
        fl[flagged] = True
        summary = {"file": name, "rows": len(rows), "poisoned": int(poisoned.sum()), "tests": len(tests),
                   "passed": int(hit.sum()), "flagged_rows": len(flagged),
                   "recall": round(float(fl[poisoned].mean()), 3) if poisoned.any() else None,
                   "clean_removed": round(float(fl[~poisoned].mean()), 4)}
        print(json.dumps(summary), flush=True)
        for t in sorted(tests, key=lambda t: -t[6])[:15]:
            print(f"   {t[0]:<24} label {t[1]} rows {t[2]:>4} poisoned {t[3]:>4} "
                  f"P(not c) {t[4]:.2f} vs {t[5]:.2f} z {t[6]:6.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
