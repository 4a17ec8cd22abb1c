"""Words that come together: one hypothesis for a trigger of several words inserted apart.

A trigger of several rare words, each inserted at its own random place (Badnets draws four times from
cf, mn, bb, tq), leaves each word on only part of the poisoned rows, so each word alone carries part of
the evidence; where the target class is the file's majority (a purity ceiling near 1) no single word may
pass the purity test. The words still come together. Two words are linked when each is on most of the
other's rows and their overlap is beyond chance (hypergeometric, Bonferroni over the pairs that mostly
overlap); each connected set of linked words whose rows are not all the same becomes one feature,
`words:a|b|...`, on every row that holds any of them, and is tested in place of its words. Grouping looks
at no label, so the purity test on the group's rows stays a fair test.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from core.screen.features import GROUP_PREFIX, is_word


def word_groups(features: Sequence[set[str]], min_rows: int, alpha: float) -> dict[str, frozenset[str]]:
    """Group feature name -> its member words (`w:` features)."""
    from scipy import sparse, stats
    from scipy.sparse.csgraph import connected_components

    n = len(features)
    count = Counter(f for fs in features for f in fs if is_word(f))
    # a word on more than half the rows is everywhere's neighbour, and no trigger of a poisoned minority
    words = sorted(w for w, k in count.items() if min_rows <= k <= n / 2)
    if len(words) < 2:
        return {}
    column = {w: j for j, w in enumerate(words)}
    cells = [(i, column[f]) for i, fs in enumerate(features) for f in fs if f in column]
    rows, cols = (np.array(v, dtype=np.int64) for v in zip(*cells, strict=True))
    x = sparse.csr_matrix((np.ones(len(cells), dtype=np.int32), (rows, cols)), shape=(n, len(words)))
    sizes = np.asarray(x.sum(axis=0)).ravel()
    a, b, k = _mostly_together(x, sizes)
    if not len(k):
        return {}
    p = stats.hypergeom.sf(k - 1, n, sizes[a], sizes[b])
    linked = p <= alpha / len(k)
    graph = sparse.coo_matrix((np.ones(int(linked.sum())), (a[linked], b[linked])), shape=(len(words),) * 2)
    _, component = connected_components(graph, directed=False)
    members: dict[int, list[int]] = {}
    for j, c in enumerate(component):
        members.setdefault(int(c), []).append(j)
    groups: dict[str, frozenset[str]] = {}
    for js in members.values():
        if len(js) < 2:
            continue
        union = int((x[:, js].sum(axis=1) > 0).sum())
        if all(sizes[j] == union for j in js):  # the words of one phrase: the same rows, already one hypothesis
            continue
        names = sorted(words[j] for j in js)
        groups[GROUP_PREFIX + "|".join(w.removeprefix("w:") for w in names)] = frozenset(names)
    return groups


def _mostly_together(x, sizes: np.ndarray, block: int = 512) -> tuple[np.ndarray, ...]:  # noqa: ANN001 - scipy csr
    """(a, b, overlap) for the word pairs a < b each on more than half of the other's rows. The overlaps are
    counted a block of words at a time: on long rows the full word-by-word product holds gigabytes."""
    xt, xc = x.T.tocsr(), x.tocsc()
    found: list[tuple[np.ndarray, ...]] = []
    for start in range(0, x.shape[1], block):
        co = (xt @ xc[:, start:start + block]).tocoo()
        col = co.col + start
        keep = (co.row < col) & (2 * co.data > sizes[co.row]) & (2 * co.data > sizes[col])
        found.append((co.row[keep], col[keep], co.data[keep]))
    return tuple(np.concatenate(parts) for parts in zip(*found, strict=True))


def with_groups(features: Sequence[set[str]], groups: dict[str, frozenset[str]]) -> list[set[str]]:
    """Each row's features plus the groups it holds a word of."""
    if not groups:
        return list(features)
    return [fs | {g for g, words in groups.items() if not words.isdisjoint(fs)} for fs in features]
