"""Initialise the classification head from a linear probe on the clean aux rows (`head_init="probe"`).

The authors leave the output layer at its random init and freeze it whenever LoRA is on. On a small
backbone that leaves the low-rank updates to learn both the task and a mapping onto a random
projection, and MiniLM barely learns that way (muscle's clean accuracy at the authors' settings stays
at 57-63%: bench/results/fidelity.md). A logistic regression fitted on
the frozen features that feed the output layer, over the trusted aux rows only, gives the head a
clean starting point; whether it stays frozen afterwards is still `train_head`. It never sees the
(untrusted) training rows or the held-back selection rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from core.models.backbones import family, unwrap

# The last linear layer of each family's head: its input is the feature the probe is fitted on.
OUTPUT_LAYER: dict[str, str] = {
    "bert": "classifier",
    "roberta": "classifier.out_proj",
    "distilbert": "classifier",
    "llama": "score.out_proj",
}


def output_layer(model: nn.Module) -> nn.Linear:
    layer = unwrap(model).get_submodule(OUTPUT_LAYER[family(model)])
    if not isinstance(layer, nn.Linear):
        raise TypeError(f"expected a Linear output layer, got {type(layer).__name__}")
    return layer


@torch.no_grad()
def head_features(model: nn.Module, tokenizer: Any, texts: Sequence[str], max_length: int = 512) -> torch.Tensor:
    """The inputs of the output layer (eval mode, no dropout), one row per text, in order.

    One text per forward pass: the engine's predictor sorts batches by length, and the aux set is small
    (a few dozen to a few hundred rows), so exact order is worth more than batching here.
    """
    from core.training.predict import predict_logits

    rows: list[torch.Tensor] = []

    def keep(mod: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        feat = args[0].detach().float().cpu()
        # Decoder heads score every position and pool the last real token; one unpadded text per
        # pass makes that the last position.
        rows.append(feat[:, -1, :] if feat.dim() == 3 else feat)

    handle = output_layer(model).register_forward_hook(keep)
    try:
        for text in texts:
            predict_logits(model, tokenizer, [text], batch_size=1, max_length=max_length)
    finally:
        handle.remove()
    return torch.cat(rows)


def fit_linear_probe(features: torch.Tensor, labels: Sequence[int], num_labels: int, bias: bool = True,
                     l2: float = 1e-3, steps: int = 100) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Multinomial logistic regression (L-BFGS, L2 on the weights) on the raw features."""
    x = features.double()
    y = torch.as_tensor(list(labels), dtype=torch.long)
    weight = torch.zeros(num_labels, x.shape[1], dtype=torch.float64, requires_grad=True)
    params = [weight]
    b = torch.zeros(num_labels, dtype=torch.float64, requires_grad=True) if bias else None
    if b is not None:
        params.append(b)
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(F.linear(x, weight, b), y) + l2 * (weight ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return weight.detach(), None if b is None else b.detach()


def init_head_from_probe(model: nn.Module, tokenizer: Any, rows: Sequence[Any], max_length: int = 512,
                         l2: float = 1e-3) -> dict[str, float]:
    """Fit the probe on `rows` (.text, .label) and copy it into the output layer; returns its fit."""
    if not rows:
        raise ValueError("head_init=probe needs clean aux rows")
    layer = output_layer(model)
    feats = head_features(model, tokenizer, [r.text for r in rows], max_length=max_length)
    labels = [int(r.label) for r in rows]
    weight, bias = fit_linear_probe(feats, labels, layer.out_features, bias=layer.bias is not None, l2=l2)
    with torch.no_grad():
        layer.weight.copy_(weight.to(layer.weight.dtype))
        if bias is not None:
            layer.bias.copy_(bias.to(layer.bias.dtype))
    preds = F.linear(feats.double(), weight, bias).argmax(-1)
    return {"aux_accuracy": float((preds == torch.tensor(labels)).double().mean()), "rows": len(rows)}
