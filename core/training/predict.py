"""Batched inference: logits for a list of texts, in the input order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from core.models.backbones import effective_max_length
from core.training.batching import (
    collate,
    encode_texts,
    length_sorted_batches,
    model_input_names,
    pad_id_of,
)
from core.training.device import autocast, resolve_device


def model_device(model: nn.Module) -> torch.device:
    """Where the model's parameters live (CPU for a parameterless module)."""
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def reserved_positions(model: nn.Module) -> int:
    """Position slots used by prefix-tuning virtual tokens (0 for other methods)."""
    from core.defenses.methods import prefix_tokens

    return prefix_tokens(model)


@torch.no_grad()
def predict_logits(model: nn.Module, tokenizer: Any, texts: Sequence[str], batch_size: int = 128,
                   max_length: int = 512, device: str | torch.device | None = None,
                   precision: str = "fp32") -> torch.Tensor:
    """fp32 CPU logits of shape (len(texts), num_labels), rows in the order of ``texts``.

    Eval mode (no dropout), length-sorted dynamic-padding batches; the model's train/eval mode is
    restored afterwards. ``device`` None: wherever the model already is. ``precision``: the resolved
    precision (``fp32``/``bf16``/``fp16``; autocast applies on CUDA only).
    """
    dev = model_device(model) if device is None else resolve_device(device)
    if model_device(model) != dev:
        model.to(dev)
    limit = effective_max_length(model, tokenizer, max_length, reserved=reserved_positions(model))
    rows = encode_texts(tokenizer, texts, limit, keep=model_input_names(model))
    num_labels = int(getattr(getattr(model, "config", None), "num_labels", 0) or 0)
    if not rows:
        return torch.zeros((0, num_labels), dtype=torch.float32)
    pad_id = pad_id_of(tokenizer)
    side = getattr(tokenizer, "padding_side", "right")
    was_training = model.training
    model.eval()
    out: torch.Tensor | None = None
    try:
        for idx in length_sorted_batches([len(r["input_ids"]) for r in rows], batch_size):
            batch = {k: v.to(dev) for k, v in collate([rows[i] for i in idx], pad_id, side).items()}
            with autocast(dev, precision):
                logits = model(**batch).logits
            logits = logits.detach().float().cpu()
            if out is None:
                out = torch.empty((len(rows), logits.shape[-1]), dtype=torch.float32)
            out[torch.tensor(idx)] = logits  # back to the caller's order
    finally:
        model.train(was_training)
    assert out is not None
    return out


def predict_labels(model: nn.Module, tokenizer: Any, texts: Sequence[str], **kwargs: Any) -> list[int]:
    return predict_logits(model, tokenizer, texts, **kwargs).argmax(dim=-1).tolist()


def accuracy_on(model: nn.Module, tokenizer: Any, examples: Sequence[Any], **kwargs: Any) -> float | None:
    """Share of ``examples`` (objects with .text and .label) predicted right; None when empty."""
    if not examples:
        return None
    preds = predict_labels(model, tokenizer, [e.text for e in examples], **kwargs)
    return sum(int(p == e.label) for p, e in zip(preds, examples, strict=True)) / len(examples)
