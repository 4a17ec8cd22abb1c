"""RAP (Yang et al., 2021): a learned perturbation that shakes clean inputs but not triggered ones.

1. The RAP trigger word ("mb" in MuScleLoRA's config, "cf" upstream) is inserted at position 0.
2. Only its word-embedding row is trained, on clean dev texts, so that the target-class probability
   drops by between 0.1 and 0.3: with diff = p_rap(target) − p(target),
   loss = scale·mean(relu(diff + 0.1)) + mean(relu(−0.3 − diff)); θ ← θ − lr·∇θ, then θ is rescaled to
   its original norm.
3. Δ = p(target) − p_rap(target). The threshold is the frr-th percentile of Δ over clean dev texts
   that the model predicts as the target; inputs with Δ below it are flagged (a trigger keeps the
   model confident, so the perturbation barely moves it).

Where we differ from upstream (docs/analysis.md): upstream calls `loss.backward()` every iteration
without zeroing gradients, so each update applies the sum of all past gradients; we take a fresh
gradient of the one embedding row per iteration (`accumulate_grads=True` restores the upstream
behaviour). Everything else in the model is frozen while the row trains and unfrozen afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from core.training.predict import model_device


def insert_front(text: str, trigger: str) -> str:
    return " ".join([trigger, *text.split()])


def trigger_token_id(tokenizer: Any, trigger: str) -> int:
    """Upstream: `tokenizer(trigger)['input_ids'][1]` (after [CLS]); index 0 when there is no [CLS]."""
    ids = tokenizer(trigger)["input_ids"]
    specials = set(getattr(tokenizer, "all_special_ids", []))
    real = [i for i in ids if i not in specials]
    if real:
        return int(real[0])
    return int(ids[1] if len(ids) > 1 else ids[0])


class Rap:
    """`fit(clean_dev_texts)` trains the trigger row and sets the threshold; `detect(texts) -> flags`."""

    def __init__(self, model: Any, tokenizer: Any, target: int, trigger: str = "mb", epochs: int = 5,
                 lr: float = 1e-2, prob_range: tuple[float, float] = (-0.1, -0.3), scale: float = 1.0,
                 frr: float = 0.01, batch_size: int = 32, max_length: int = 512,
                 accumulate_grads: bool = False) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.target = int(target)
        self.trigger = trigger
        self.epochs = epochs
        self.lr = lr
        self.upper, self.lower = prob_range  # diff should fall in [lower, upper] = [-0.3, -0.1]
        self.scale = scale
        self.frr = frr
        self.batch_size = batch_size
        self.max_length = max_length
        self.accumulate_grads = accumulate_grads
        self.weight = model.get_input_embeddings().weight
        self.token_id = trigger_token_id(tokenizer, trigger)
        self.norm = float(self.weight.data[self.token_id].norm())
        self.threshold: float | None = None
        self.history: list[dict[str, float]] = []

    def _probs(self, texts: Sequence[str], grad_if_trigger: bool = False) -> torch.Tensor:
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt").to(model_device(self.model))
        if grad_if_trigger and not bool((enc["input_ids"] == self.token_id).any()):
            # Without the trigger token the row gets no gradient from this pass: skip the graph
            # (same result as upstream's differentiable pass, half the backward cost).
            with torch.no_grad():
                return self.model(**enc).logits.float().softmax(-1)
        return self.model(**enc).logits.float().softmax(-1)

    def loss(self, texts: Sequence[str]) -> tuple[torch.Tensor, int]:
        diff = (self._probs([insert_front(t, self.trigger) for t in texts])[:, self.target]
                - self._probs(texts, grad_if_trigger=True)[:, self.target])
        loss = (self.scale * torch.relu(diff - self.upper).mean()
                + torch.relu(self.lower - diff).mean())
        inside = int(((diff < self.upper) & (diff > self.lower)).sum())
        return loss, inside

    def fit(self, clean_texts: Sequence[str]) -> Rap:
        if not clean_texts:
            raise ValueError("RAP needs clean dev texts")
        was_training = self.model.training
        self.model.eval()  # upstream trains the row with the victim in eval mode (no dropout)
        flags = {n: p.requires_grad for n, p in self.model.named_parameters()}
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.weight.requires_grad_(True)
        running = torch.zeros_like(self.weight[self.token_id])
        try:
            for epoch in range(self.epochs):
                total, inside = 0.0, 0
                for start in range(0, len(clean_texts), self.batch_size):
                    batch = clean_texts[start:start + self.batch_size]
                    loss, ok = self.loss(batch)
                    (grad,) = torch.autograd.grad(loss, self.weight)  # fresh: nothing accumulates
                    row_grad = grad[self.token_id]
                    if self.accumulate_grads:  # upstream: .grad never zeroed
                        running = running + row_grad
                        row_grad = running
                    with torch.no_grad():
                        row = self.weight[self.token_id] - self.lr * row_grad
                        self.weight[self.token_id] = row * (self.norm / row.norm().clamp_min(1e-12))
                    total += float(loss.detach()) * len(batch)
                    inside += ok
                self.history.append({"epoch": epoch + 1, "loss": total / len(clean_texts),
                                     "in_range": inside / len(clean_texts)})
        finally:
            for n, p in self.model.named_parameters():
                p.requires_grad_(flags[n])
            self.model.train(was_training)
        diffs = self.prob_drop(clean_texts, only_predicted_target=True)
        # No clean text predicted as the target: no threshold, nothing gets flagged (NaN compares False).
        self.threshold = float(np.nanpercentile(diffs, self.frr * 100)) if len(diffs) else float("nan")
        return self

    @torch.no_grad()
    def prob_drop(self, texts: Sequence[str], only_predicted_target: bool = False) -> np.ndarray:
        """Δ = p(target) − p_rap(target) per text (optionally only texts predicted as the target)."""
        was_training = self.model.training
        self.model.eval()
        out: list[np.ndarray] = []
        try:
            for start in range(0, len(texts), self.batch_size):
                batch = texts[start:start + self.batch_size]
                p = self._probs(batch)
                p_rap = self._probs([insert_front(t, self.trigger) for t in batch])
                d = (p - p_rap)[:, self.target]
                if only_predicted_target:
                    d = d[p.argmax(-1) == self.target]
                out.append(d.cpu().numpy())
        finally:
            self.model.train(was_training)
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0)

    def detect(self, texts: Sequence[str]) -> np.ndarray:
        if self.threshold is None:
            raise RuntimeError("call fit(clean_dev_texts) first")
        return self.prob_drop(texts) < self.threshold
