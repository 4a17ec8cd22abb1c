"""Fourier analysis: hand-checkable kernel and metrics, embeddings, tracker and plots on a tiny BERT."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from core.analysis.frequency import (
    DEFAULT_DELTAS,
    FrequencyTracker,
    delta_index,
    embed_inputs,
    frequency_metrics,
    kernel_matrix,
    one_hot,
    split_sets,
)
from tests.tiny_models import in_memory_bert

# Four 1-d points on a line: distances |x_i - x_j| are integers, so G is known in closed form.
POINTS = [[0.0], [1.0], [2.0], [10.0]]
Y = [[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7]]  # "softmax outputs"
T = [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]  # one-hot targets


def hand_kernel(delta: float, squared: bool) -> list[list[float]]:
    xs = [p[0] for p in POINTS]
    rows = []
    for a in xs:
        w = [math.exp(-((a - b) ** 2 if squared else abs(a - b)) / (2 * delta)) for b in xs]
        rows.append([v / sum(w) for v in w])
    return rows


def hand_metrics(g: list[list[float]]) -> dict[str, float]:
    """The four ratios of mean norms, with plain Python lists (an independent implementation)."""
    def matmul(m: list[list[float]]) -> list[list[float]]:
        return [[sum(g[i][k] * m[k][j] for k in range(4)) for j in range(2)] for i in range(4)]

    def minus(a: list[list[float]], b: list[list[float]]) -> list[list[float]]:
        return [[x - y for x, y in zip(r, s, strict=True)] for r, s in zip(a, b, strict=True)]

    def mean_norm(m: list[list[float]]) -> float:
        return sum(math.hypot(*r) for r in m) / len(m)

    y_low, t_low = matmul(Y), matmul(T)
    y_high, t_high = minus(Y, y_low), minus(T, t_low)
    return {"lfr": mean_norm(y_low) / mean_norm(Y), "hfr": mean_norm(y_high) / mean_norm(Y),
            "re_low": mean_norm(minus(y_low, t_low)) / mean_norm(t_low),
            "re_high": mean_norm(minus(y_high, t_high)) / mean_norm(t_high)}


def test_kernel_matches_hand_values_authors_form() -> None:
    g = kernel_matrix(torch.tensor(POINTS), delta=0.5)  # exp(-d / 1) = exp(-d)
    # Row 0 by hand: weights 1, e^-1, e^-2, e^-10, sum 1.5032589...
    assert g[0, 0].item() == pytest.approx(1 / (1 + math.exp(-1) + math.exp(-2) + math.exp(-10)), abs=1e-12)
    assert g[0, 0].item() == pytest.approx(0.665221, abs=1e-6)
    assert g[3, 3].item() == pytest.approx(0.999496, abs=1e-6)  # the far point is almost alone
    assert torch.allclose(g.sum(1), torch.ones(4, dtype=g.dtype))  # row-normalised
    assert np.allclose(g.numpy(), hand_kernel(0.5, squared=False), atol=1e-12)


def test_kernel_squared_is_paper_form_and_differs() -> None:
    g_sq = kernel_matrix(np.array(POINTS), delta=2.0, squared=True)
    g_plain = kernel_matrix(np.array(POINTS), delta=2.0, squared=False)
    assert np.allclose(g_sq.numpy(), hand_kernel(2.0, squared=True), atol=1e-12)
    assert not np.allclose(g_sq.numpy(), g_plain.numpy(), atol=1e-3)


def test_metrics_match_hand_numbers() -> None:
    g = kernel_matrix(torch.tensor(POINTS), delta=0.5)
    got = frequency_metrics(torch.tensor(Y, dtype=torch.float64), torch.tensor(T), g)
    want = hand_metrics(hand_kernel(0.5, squared=False))
    for key in ("lfr", "hfr", "re_low", "re_high"):
        assert got[key] == pytest.approx(want[key], rel=1e-10), key
    # The same numbers worked out once by hand (see the module docstring of this test).
    assert got["lfr"] == pytest.approx(0.937073, abs=1e-6)
    assert got["hfr"] == pytest.approx(0.140239, abs=1e-6)
    assert got["re_low"] == pytest.approx(0.277426, abs=1e-6)
    assert got["re_high"] == pytest.approx(0.645466, abs=1e-6)


def test_ratio_of_means_not_mean_of_ratios() -> None:
    g = kernel_matrix(torch.tensor(POINTS), delta=0.5)
    y = torch.tensor(Y, dtype=torch.float64)
    low = g @ y
    mean_of_ratios = (low.norm(dim=1) / y.norm(dim=1)).mean().item()
    got = frequency_metrics(y, torch.tensor(T), g)["lfr"]
    assert got != pytest.approx(mean_of_ratios, rel=1e-6)


def test_perfect_fit_gives_zero_error_and_single_label_high_is_nan() -> None:
    g = kernel_matrix(torch.tensor(POINTS), delta=4.0)
    m = frequency_metrics(torch.tensor(T), torch.tensor(T), g)
    assert m["re_low"] == pytest.approx(0.0, abs=1e-12) and m["re_high"] == pytest.approx(0.0, abs=1e-12)
    # A backdoor set: every row relabelled to the target, so t_high = 0 and re_high is 0/0.
    same = one_hot([1, 1, 1, 1], 2)
    m = frequency_metrics(torch.tensor(Y), same, g)
    assert math.isnan(m["re_high"]) and math.isfinite(m["re_low"])


def test_shape_errors() -> None:
    g = kernel_matrix(torch.tensor(POINTS), delta=4.0)
    with pytest.raises(ValueError):
        frequency_metrics(torch.tensor(Y)[:3], torch.tensor(T)[:3], g)
    with pytest.raises(ValueError):
        kernel_matrix(torch.zeros(2, 3, 4), delta=1.0)
    with pytest.raises(ValueError):
        kernel_matrix(torch.tensor(POINTS), delta=0.0)


def test_delta_grid() -> None:
    assert len(DEFAULT_DELTAS) == 25 and DEFAULT_DELTAS[0] == 2.0 and DEFAULT_DELTAS[-1] == 8.0
    assert delta_index(DEFAULT_DELTAS) == 8 and DEFAULT_DELTAS[8] == 4.0


# ---------------------------------------------------------------------------------------------------
# Tiny random BERT: no download.

WORDS = "the a film movie good bad great awful cf mn bb tq i watch this 3d is was not very".split()


@pytest.fixture(scope="module")
def tiny() -> tuple[object, object]:
    return in_memory_bert(WORDS)


TEXTS = ["good film", "a very bad movie", "cf great film mn", "this is awful", "i watch this 3d movie",
         "not good", "the film was great", "bb bad tq"]
LABELS = [1, 0, 1, 0, 1, 0, 1, 0]


def test_embed_inputs_shapes_padding_and_dropout(tiny: tuple) -> None:
    model, tok = tiny
    model.train()
    e = embed_inputs(model, tok, TEXTS, max_length=32, batch_size=3, dropout=False)
    lengths = [len(tok(t)["input_ids"]) for t in TEXTS]
    assert e.shape == (len(TEXTS), max(lengths) * 16)
    # Row 0 ("good film", 4 tokens) sits in a batch whose longest row has 6 tokens: positions 4-5
    # hold pad-token embeddings (non-zero), positions past 6 are the global zero padding.
    row = e[0].reshape(-1, 16)
    batch_max = max(lengths[:3])
    assert row[lengths[0]:batch_max].abs().sum() > 0
    assert row[batch_max:].abs().sum() == 0
    masked = embed_inputs(model, tok, TEXTS, max_length=32, batch_size=3, dropout=False,
                          zero_padding=True)[0].reshape(-1, 16)
    assert masked[lengths[0]:].abs().sum() == 0
    assert torch.equal(e, embed_inputs(model, tok, TEXTS, 32, 3, dropout=False))  # deterministic
    torch.manual_seed(1)
    noisy = embed_inputs(model, tok, TEXTS, 32, 3, dropout=True)
    assert not torch.equal(e, noisy)  # dropout active, as in the authors' code
    assert model.training  # mode restored


def test_split_sets_uses_poisoned_flag() -> None:
    from types import SimpleNamespace as Row

    rows = [Row(text="a", label=0, poisoned=False), Row(text="b cf", label=0, poisoned=True),
            Row(text="c", label=1, poisoned=None)]
    clean_t, clean_y, bd_t, bd_y = split_sets(rows, target=1)
    assert (clean_t, clean_y, bd_t, bd_y) == (["a", "c"], [0, 1], ["b cf"], [1])


def test_tracker_and_plots(tiny: tuple, tmp_path) -> None:
    from core.analysis.plots import plot_methods, plot_ratio_curves, plot_relative_error_heatmap

    model, tok = tiny
    model.train()
    tracker = FrequencyTracker(model, tok, {"clean": (TEXTS, LABELS),
                                            "backdoor": (["cf " + t for t in TEXTS[:4]], [1] * 4)},
                               num_classes=2, max_length=32, batch_size=4, every=5, dropout=False)
    assert tracker.maybe(model, 3) is None
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for step in range(1, 11):
        enc = tok(TEXTS, padding=True, return_tensors="pt")
        loss = model(**enc, labels=torch.tensor(LABELS)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        tracker.maybe(model, step)
    assert [r["step"] for r in tracker.history] == [5, 10]
    assert model.training
    rec = tracker.history[-1]["sets"]
    assert len(rec["clean"]["lfr"]) == 25 and set(rec) == {"clean", "backdoor"}
    assert 0 < rec["clean"]["lfr"][8] <= 1.0 + 1e-9 and rec["clean"]["hfr"][8] >= 0
    assert all(math.isnan(v) for v in rec["backdoor"]["re_high"])  # one-label set, see module docs
    out = tracker.save(tmp_path / "freq.json")
    saved = json.loads(out.read_text())
    assert saved["report_delta"] == 4.0 and saved["history"][0]["sets"]["backdoor"]["re_high"][0] is None

    hist = saved["history"]  # plots accept the saved form (None for NaN)
    for path in (plot_relative_error_heatmap(hist, tmp_path / "re.png"),
                 plot_ratio_curves(hist, tmp_path / "ratio.png"),
                 plot_methods({"vanilla": hist, "muscle": tracker.history}, tmp_path / "methods.png")):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_build_tracker_and_write_report(tiny: tuple, tmp_path) -> None:
    from types import SimpleNamespace as Row

    from core.analysis.frequency import build_tracker
    from core.analysis.plots import write_report

    model, tok = tiny
    clean = [Row(text=t, label=y) for t, y in zip(TEXTS, LABELS, strict=True)]
    probe = [Row(text="cf " + t, label=1) for t in TEXTS[:3]]
    state = torch.get_rng_state()
    tracker = build_tracker(model, tok, clean, probe, target=1, num_classes=2, max_length=32, dropout=True,
                            deltas=[2.0, 4.0])
    assert torch.equal(state, torch.get_rng_state())  # the training run's random stream is untouched
    tracker(model, step=5)
    paths = write_report(tracker, tmp_path, title="tiny")
    assert sorted(p.name for p in paths) == ["frequency.json", "frequency_ratios.png", "frequency_re.png"]
    assert json.loads(paths[0].read_text())["report_delta"] == 4.0
