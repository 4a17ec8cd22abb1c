"""PNG figures of a FrequencyTracker history, in the style of the paper's Figures 1, 2 and 5.

* `plot_relative_error_heatmap` (Fig. 2): relative error over steps, rows bottom to top
  backdoor-low, clean-low, backdoor-high, clean-high; colour map RdBu over [0.1, 1.0] as the authors'
  `visualizeFrequencyDeviation` (red = small error = fitted). Undefined cells (re_high of a set with
  one label) are drawn grey.
* `plot_ratio_curves` (Fig. 1): LFR and HFR of the clean and backdoor mappings, log scale.
* `plot_methods` (Fig. 5): one heatmap per method side by side.

A history is `FrequencyTracker.history` or the `history` list of its saved JSON.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: servers and CI have no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, MaxNLocator, ScalarFormatter  # noqa: E402

from core.analysis.frequency import (  # noqa: E402
    DEFAULT_DELTAS,
    REPORT_DELTA,
    FrequencyTracker,
    delta_index,
    series,
)

ROWS = (("backdoor", "re_low", "Backdoor Low"), ("clean", "re_low", "Clean Low"),
        ("backdoor", "re_high", "Backdoor High"), ("clean", "re_high", "Clean High"))
CLEAN_COLOR, BACKDOOR_COLOR = "#4472c4", "#ed7d31"  # the authors' colours
SETS = (("clean", CLEAN_COLOR, "Clean"), ("backdoor", BACKDOOR_COLOR, "Backdoor"))


def _index(deltas: Sequence[float] | None, delta: float) -> int:
    return delta_index(list(deltas) if deltas is not None else list(DEFAULT_DELTAS), delta)


def _matrix(history: Sequence[Mapping[str, Any]], idx: int) -> np.ndarray:
    rows = []
    for set_name, metric, _ in ROWS:
        if history and set_name in history[0]["sets"]:
            rows.append(series(history, set_name, metric, idx))
        else:
            rows.append([float("nan")] * len(history))
    return np.ma.masked_invalid(np.asarray(rows, dtype=float))


def _heatmap(ax: Any, history: Sequence[Mapping[str, Any]], idx: int, title: str | None) -> Any:
    cmap = plt.get_cmap("RdBu").with_extremes(bad="#bbbbbb")
    data = _matrix(history, idx)
    mesh = ax.pcolormesh(data, cmap=cmap, vmin=0.1, vmax=1.0)
    ax.set_yticks([0.5, 1.5, 2.5, 3.5], [label for _, _, label in ROWS])
    steps = [rec["step"] for rec in history]
    every = max(1, len(steps) // 5)
    ax.set_xticks([i + 0.5 for i in range(0, len(steps), every)], [str(s) for s in steps[::every]])
    ax.set_xlabel("Steps")
    if title:
        ax.set_title(title)
    return mesh


def plot_relative_error_heatmap(history: Sequence[Mapping[str, Any]], path: str | Path,
                                deltas: Sequence[float] | None = None, delta: float = REPORT_DELTA,
                                title: str | None = None) -> Path:
    """Figure 2 style heatmap of the relative errors at one δ."""
    if not history:
        raise ValueError("empty history")
    fig, ax = plt.subplots(figsize=(7, 4))
    mesh = _heatmap(ax, history, _index(deltas, delta), title)
    fig.colorbar(mesh, ax=ax, ticks=[0.1, 0.3, 0.5, 0.7, 0.9, 1.0])
    fig.tight_layout()
    return _save(fig, path)


def plot_ratio_curves(history: Sequence[Mapping[str, Any]], path: str | Path,
                      deltas: Sequence[float] | None = None, delta: float = REPORT_DELTA,
                      title: str | None = None) -> Path:
    """Figure 1 style: LFR (top) and HFR (bottom) of clean and backdoor mappings, log scale."""
    if not history:
        raise ValueError("empty history")
    idx = _index(deltas, delta)
    steps = [rec["step"] for rec in history]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 5), sharex=True)
    for ax, metric, label in ((top, "lfr", "LFR"), (bottom, "hfr", "HFR")):
        shown: list[float] = []
        for set_name, color, name in SETS:
            if set_name in history[0]["sets"]:
                values = np.asarray(series(history, set_name, metric, idx), dtype=float)
                # log scale cannot show 0 or NaN; leave those points out rather than fail
                values = np.where(values > 0, values, np.nan)
                ax.plot(steps, values, color=color, label=name, marker="o", markersize=2)
                shown.extend(v for v in values if np.isfinite(v))
        ax.set_yscale("log")
        if shown:  # one step, or flat curves: autoscale would zoom into a sliver with offset labels
            lo, hi = min(shown), max(shown)
            if hi / lo < 2:
                mid = (lo * hi) ** 0.5
                ax.set_ylim(mid / 1.5, mid * 1.5)
        if metric == "lfr":  # values near 1: plain decimals read better than 9.9x10^-1
            ax.yaxis.set_major_formatter(ScalarFormatter(useOffset=False))
            ax.yaxis.set_minor_formatter(FormatStrFormatter("%.2g"))
        ax.set_ylabel(label)
    top.legend(loc="best")
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    bottom.set_xlabel("Steps")
    if title:
        top.set_title(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_methods(histories: Mapping[str, Sequence[Mapping[str, Any]]], path: str | Path,
                 deltas: Sequence[float] | None = None, delta: float = REPORT_DELTA) -> Path:
    """Figure 5 style: the relative-error heatmap of each method, side by side."""
    if not histories:
        raise ValueError("no histories")
    idx = _index(deltas, delta)
    n = len(histories)
    cols = min(n, 2)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, 3.6 * rows), squeeze=False, layout="constrained")
    mesh = None
    for ax, (name, history) in zip(axes.flat, histories.items(), strict=False):
        mesh = _heatmap(ax, history, idx, name)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    if mesh is not None:
        fig.colorbar(mesh, ax=axes.ravel().tolist(), ticks=[0.1, 0.3, 0.5, 0.7, 0.9, 1.0])
    return _save(fig, path)


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def write_report(tracker: FrequencyTracker, out_dir: str | Path, title: str | None = None) -> list[Path]:
    """frequency.json plus the Fig. 1 and Fig. 2 style PNGs at δ = 4 into `out_dir`."""
    out = Path(out_dir)
    paths = [tracker.save(out / "frequency.json")]
    if tracker.history:
        paths.append(plot_relative_error_heatmap(tracker.history, out / "frequency_re.png", tracker.deltas,
                                                 title=title))
        paths.append(plot_ratio_curves(tracker.history, out / "frequency_ratios.png", tracker.deltas,
                                       title=title))
    return paths
