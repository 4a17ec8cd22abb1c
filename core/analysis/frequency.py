"""Filtering-based Fourier analysis of what a classifier fits (paper Appendix A,
docs/reference-implementation.md §4).

The mapping F(e) = y is split into a low- and a high-frequency part by a Gaussian filter over the
input embeddings: y_low = G·Y with G the row-normalised kernel matrix, y_high = Y - y_low; the same
for the one-hot targets T. We follow the authors' code by default (reference-implementation.md §4):

* kernel exp(-D / (2δ)) with D the plain Euclidean distance (the paper writes D², `squared=True`);
* δ over linspace(2, 8, 25), δ = 4.0 reported;
* outputs are softmax probabilities, computed in eval mode;
* inputs are the backbone's embedding-module output (word + position + type → LayerNorm), taken once,
  with dropout active as in the authors' code (`dropout=False` for a deterministic variant), each
  batch padded to its own longest row and the whole set zero-padded to the global longest row;
* every metric is a ratio of MEANS of per-sample L2 norms, not a mean of ratios.

Pure functions first (`kernel_matrix`, `frequency_metrics`), then the model-facing helpers
(`embed_inputs`, `predict_probs`) and `FrequencyTracker`, which the training loop calls every k steps.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.training.predict import model_device

DEFAULT_DELTAS: tuple[float, ...] = tuple(float(x) for x in np.linspace(2.0, 8.0, 25))
REPORT_DELTA = 4.0  # the paper's δ; index 8 of DEFAULT_DELTAS
METRIC_NAMES = ("lfr", "hfr", "re_low", "re_high")

# Below this, mean‖t_high‖ is float noise: a set whose rows share one label (the backdoor set, all
# relabelled to the target) has t_high = 0 exactly, so re_high is 0/0. The authors' code divides by the
# rounding residue (~1e-8) and its heatmap clips the result at 1.0; we report NaN instead.
_ZERO_NORM = 1e-6


def _as_tensor(x: Any) -> torch.Tensor:
    # float64: the kernel rows sum hundreds of exp() terms and the high-frequency parts are small
    # differences, so single precision would blur exactly the quantities we measure.
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64)
    return torch.as_tensor(np.asarray(x), dtype=torch.float64)


def pairwise_distances(embeddings: Any) -> torch.Tensor:
    """Euclidean distances between the rows of an (N, D) matrix."""
    e = _as_tensor(embeddings)
    if e.ndim != 2:
        raise ValueError(f"embeddings must be (N, D) flattened, got shape {tuple(e.shape)}")
    return torch.cdist(e, e, p=2)


def kernel_from_distances(dist: torch.Tensor, delta: float, squared: bool = False) -> torch.Tensor:
    if delta <= 0:
        raise ValueError("delta must be positive")
    d = dist * dist if squared else dist
    g = torch.exp(-d / (2.0 * delta))
    return g / g.sum(dim=1, keepdim=True)  # the 1/C_i of Eq. 12


def kernel_matrix(embeddings: Any, delta: float, squared: bool = False) -> torch.Tensor:
    """Row-normalised Gaussian kernel G over flattened embeddings (N, D) -> (N, N).

    squared=False: exp(-‖e_i - e_j‖ / 2δ), as the authors' code computes it; squared=True: the paper's
    exp(-‖e_i - e_j‖² / 2δ).
    """
    return kernel_from_distances(pairwise_distances(embeddings), delta, squared)


def kernel_matrices(embeddings: Any, deltas: Sequence[float] = DEFAULT_DELTAS,
                    squared: bool = False) -> list[torch.Tensor]:
    """One kernel per δ, sharing one distance computation."""
    dist = pairwise_distances(embeddings)
    return [kernel_from_distances(dist, float(d), squared) for d in deltas]


def one_hot(labels: Sequence[int], num_classes: int) -> torch.Tensor:
    idx = torch.as_tensor(list(labels), dtype=torch.long)
    if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= num_classes):
        raise ValueError("label out of range for num_classes")
    return torch.eye(num_classes, dtype=torch.float64)[idx]


def decompose(values: Any, kernel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(low, high) = (G·V, V − G·V)."""
    v = _as_tensor(values)
    low = kernel.to(torch.float64) @ v
    return low, v - low


def _ratio(num: torch.Tensor, den: torch.Tensor) -> float:
    den_v = float(den)
    if not math.isfinite(den_v) or den_v < _ZERO_NORM:
        return float("nan")
    return float(num) / den_v


def frequency_metrics(outputs: Any, targets: Any, kernel: torch.Tensor) -> dict[str, float]:
    """LFR, HFR, re_low, re_high for outputs Y (N, C softmax), targets T (N, C one-hot), kernel G.

    LFR = mean‖y_low‖ / mean‖y‖, HFR = mean‖y_high‖ / mean‖y‖,
    re_low = mean‖y_low − t_low‖ / mean‖t_low‖, re_high = mean‖y_high − t_high‖ / mean‖t_high‖.
    """
    y = _as_tensor(outputs)
    t = _as_tensor(targets)
    if y.shape != t.shape or y.ndim != 2:
        raise ValueError(f"outputs {tuple(y.shape)} and targets {tuple(t.shape)} must both be (N, C)")
    if kernel.shape != (y.shape[0], y.shape[0]):
        raise ValueError(f"kernel must be ({y.shape[0]}, {y.shape[0]}), got {tuple(kernel.shape)}")
    y_low, y_high = decompose(y, kernel)
    t_low, t_high = decompose(t, kernel)

    def mean_norm(m: torch.Tensor) -> torch.Tensor:
        return m.norm(dim=1).mean()

    y_norm = mean_norm(y)
    return {
        "lfr": _ratio(mean_norm(y_low), y_norm),
        "hfr": _ratio(mean_norm(y_high), y_norm),
        "re_low": _ratio(mean_norm(y_low - t_low), mean_norm(t_low)),
        "re_high": _ratio(mean_norm(y_high - t_high), mean_norm(t_high)),
    }


def delta_index(deltas: Sequence[float], delta: float = REPORT_DELTA) -> int:
    """Index of the δ closest to `delta` (4.0 is exactly index 8 of the default grid)."""
    return int(np.argmin([abs(float(d) - delta) for d in deltas]))


# ---------------------------------------------------------------------------------------------------
# Model-facing helpers


def _unwrap(model: Any) -> Any:
    """The plain transformers model under a PEFT wrapper (embeddings live there)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _embedding_module(model: Any) -> tuple[Any, bool]:
    """(module, takes_token_types). BERT-likes: `base_model.embeddings`; decoders: the token table."""
    base = getattr(_unwrap(model), "base_model", _unwrap(model))
    emb = getattr(base, "embeddings", None)
    if emb is not None and callable(emb):
        import inspect

        try:
            takes_types = "token_type_ids" in inspect.signature(emb.forward).parameters
        except (TypeError, ValueError):
            takes_types = False
        return emb, takes_types
    return _unwrap(model).get_input_embeddings(), False  # Llama: embed_tokens only, as the authors


@torch.no_grad()
def embed_inputs(model: Any, tokenizer: Any, texts: Sequence[str], max_length: int = 512,
                 batch_size: int = 32, dropout: bool = True, zero_padding: bool = False) -> torch.Tensor:
    """Flattened embedding-module outputs (N, L_max·d), on the CPU in float32.

    As the authors: batches in the given order, each padded to its own longest row (padding positions
    carry the pad token's embedding), then zero-padded to the global longest row. `dropout=True` keeps
    the embedding dropout active (the model was in train mode when the authors took them);
    `zero_padding=True` zeroes the pad positions so a row does not depend on its batch-mates.
    """
    if not texts:
        raise ValueError("no texts to embed")
    module, takes_types = _embedding_module(model)
    device = model_device(model)
    was_training = module.training
    module.train(dropout)
    rows: list[torch.Tensor] = []
    try:
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                            max_length=max_length, return_tensors="pt")
            ids = enc["input_ids"].to(device)
            if takes_types:
                types = enc.get("token_type_ids")
                types = types.to(device) if types is not None else torch.zeros_like(ids)
                out = module(input_ids=ids, token_type_ids=types)
            else:
                out = module(ids)
            if zero_padding and "attention_mask" in enc:
                out = out * enc["attention_mask"].to(device).unsqueeze(-1).to(out.dtype)
            rows.extend(out.detach().float().cpu())
    finally:
        module.train(was_training)
    padded = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)  # zeros past each batch's length
    return padded.reshape(padded.shape[0], -1)


def predict_probs(model: Any, tokenizer: Any, texts: Sequence[str], max_length: int = 512,
                  batch_size: int = 64) -> torch.Tensor:
    """Softmax outputs (N, C) in eval mode; the model's train/eval mode is restored afterwards."""
    from core.training.predict import predict_logits

    return predict_logits(model, tokenizer, texts, batch_size=batch_size, max_length=max_length).softmax(-1)


@dataclass
class AnalysisSet:
    """A fixed set the tracker follows: its texts, the labels it is scored against, its kernels."""

    name: str
    texts: list[str]
    labels: list[int]
    kernels: list[torch.Tensor] = field(default_factory=list, repr=False)
    targets: torch.Tensor | None = field(default=None, repr=False)


def split_sets(examples: Sequence[Any], target: int) -> tuple[list[str], list[int], list[str], list[int]]:
    """Clean and backdoor sets from rows carrying a `poisoned` flag (simulation, probe, user column).

    Clean rows keep their label; poisoned rows are scored against `target` (the backdoor mapping).
    """
    clean_t, clean_y, bd_t, bd_y = [], [], [], []
    for ex in examples:
        if getattr(ex, "poisoned", None):
            bd_t.append(ex.text)
            bd_y.append(int(target))
        else:
            clean_t.append(ex.text)
            clean_y.append(int(ex.label))
    return clean_t, clean_y, bd_t, bd_y


class FrequencyTracker:
    """Follows LFR/HFR/relative errors of a clean and a backdoor set during training.

    Build it once before training (embeddings and kernels are fixed then, the paper's assumption);
    the training loop calls `tracker(model, step)` every `every` optimiser steps (or `maybe(model,
    step)` on every step). Each call appends a record to `history` and returns it:

        {"step": 5, "sets": {"clean": {"lfr": [..25 δ..], "hfr": [...], "re_low": [...], "re_high": [...]},
                             "backdoor": {...}}}
    """

    def __init__(self, model: Any, tokenizer: Any, sets: dict[str, tuple[Sequence[str], Sequence[int]]],
                 num_classes: int, deltas: Sequence[float] = DEFAULT_DELTAS, squared: bool = False,
                 max_length: int = 512, batch_size: int = 32, every: int = 5, dropout: bool = True,
                 zero_padding: bool = False, max_rows: int | None = None, seed: int = 42) -> None:
        if every < 1:
            raise ValueError("every must be >= 1")
        self.tokenizer = tokenizer
        self.num_classes = int(num_classes)
        self.deltas = [float(d) for d in deltas]
        self.squared = squared
        self.max_length = max_length
        self.batch_size = batch_size
        self.every = every
        self.history: list[dict[str, Any]] = []
        self.sets: list[AnalysisSet] = []
        rng = np.random.default_rng(seed)
        for name, (texts, labels) in sets.items():
            texts, labels = list(texts), [int(y) for y in labels]
            if len(texts) != len(labels):
                raise ValueError(f"set {name!r}: {len(texts)} texts but {len(labels)} labels")
            if len(texts) < 2:
                raise ValueError(f"set {name!r} needs at least 2 rows")
            if max_rows is not None and len(texts) > max_rows:
                # N×N kernels per δ: cap the set for very large dev sets (memory is 25·N²·8 bytes).
                keep = sorted(rng.choice(len(texts), size=max_rows, replace=False).tolist())
                texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
            device = model_device(model)
            # Dropout draws random numbers: fork the RNG so adding the analysis to a run does not
            # change its training trajectory.
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(seed)
                emb = embed_inputs(model, tokenizer, texts, max_length, batch_size, dropout, zero_padding)
            kernels = kernel_matrices(emb, self.deltas, squared)
            self.sets.append(AnalysisSet(name, texts, labels, kernels, one_hot(labels, self.num_classes)))

    @property
    def report_index(self) -> int:
        return delta_index(self.deltas, REPORT_DELTA)

    def __call__(self, model: Any, step: int | None = None) -> dict[str, Any]:
        record: dict[str, Any] = {"step": step if step is not None else (len(self.history) + 1) * self.every,
                                  "sets": {}}
        for s in self.sets:
            probs = predict_probs(model, self.tokenizer, s.texts, self.max_length, max(self.batch_size, 64))
            per_delta = [frequency_metrics(probs, s.targets, g) for g in s.kernels]
            record["sets"][s.name] = {m: [d[m] for d in per_delta] for m in METRIC_NAMES}
            record["sets"][s.name]["accuracy"] = float(
                (probs.argmax(-1) == torch.as_tensor(s.labels)).double().mean())
        self.history.append(record)
        return record

    def maybe(self, model: Any, step: int) -> dict[str, Any] | None:
        """Call on every optimiser step; computes on every `every`-th (1-based) step only."""
        return self(model, step) if step % self.every == 0 else None

    def to_dict(self) -> dict[str, Any]:
        return {"deltas": self.deltas, "report_delta": self.deltas[self.report_index],
                "kernel": "exp(-d^2/2δ)" if self.squared else "exp(-d/2δ)",
                "sets": {s.name: len(s.texts) for s in self.sets}, "every": self.every,
                "history": self.history}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # NaN (re_high of a one-label set) is written as null: strict JSON readers reject NaN.
        path.write_text(json.dumps(_nan_to_none(self.to_dict()), indent=1) + "\n")
        return path


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    return obj


def series(history: Sequence[dict[str, Any]], set_name: str, metric: str, index: int) -> list[float]:
    """One metric of one set at one δ index over the recorded steps (None → NaN)."""
    out = []
    for rec in history:
        v = rec["sets"][set_name][metric][index]
        out.append(float("nan") if v is None else float(v))
    return out


def build_tracker(model: Any, tokenizer: Any, clean_rows: Sequence[Any], backdoor_rows: Sequence[Any],
                  target: int, num_classes: int, **kwargs: Any) -> FrequencyTracker:
    """The pipeline's one-liner: clean rows (e.g. the select set) keep their labels, backdoor rows (a
    probe, or training rows flagged `poisoned`) are scored against the target, as the authors'
    dev-clean / dev-poison sets."""
    sets = {"clean": ([r.text for r in clean_rows], [int(r.label) for r in clean_rows])}
    if backdoor_rows:
        sets["backdoor"] = ([r.text for r in backdoor_rows], [int(target)] * len(backdoor_rows))
    return FrequencyTracker(model, tokenizer, sets, num_classes, **kwargs)
