"""Tokenise once, pad per batch (dynamic padding), and order evaluation batches by length.

Examples are tokenised without padding (truncated at ``max_length``); each batch is padded only to its
own longest row, on the tokenizer's padding side. Evaluation sorts rows by length so batches hold
similar lengths (little padding), and callers put results back in the original order.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from core.models.backbones import unwrap

Features = dict[str, list[int]]
PAD_VALUES = {"attention_mask": 0, "token_type_ids": 0}


def model_input_names(model: nn.Module) -> set[str]:
    """Keyword inputs the transformers model's forward names explicitly (drops e.g. token_type_ids
    for Llama, whose forward would pass them on as unknown kwargs)."""
    params = inspect.signature(unwrap(model).forward).parameters
    return {name for name, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def encode_texts(tokenizer: Any, texts: Sequence[str], max_length: int,
                 keep: set[str] | None = None) -> list[Features]:
    """Per-row token features (no padding), truncated at ``max_length`` tokens."""
    if not texts:
        return []
    enc = tokenizer(list(texts), truncation=True, max_length=max_length, padding=False)
    keys = [k for k in enc.keys() if k in ("input_ids", "attention_mask", "token_type_ids")
            and (keep is None or k in keep)]
    if "attention_mask" not in keys:  # always masked: pad positions must never be attended
        enc["attention_mask"] = [[1] * len(ids) for ids in enc["input_ids"]]
        keys.append("attention_mask")
    return [{k: list(enc[k][i]) for k in keys} for i in range(len(texts))]


def collate(rows: Sequence[Features], pad_id: int, padding_side: str = "right") -> dict[str, torch.Tensor]:
    """Pad a batch to its longest row."""
    longest = max(len(r["input_ids"]) for r in rows)
    batch: dict[str, torch.Tensor] = {}
    for key in rows[0]:
        fill = pad_id if key == "input_ids" else PAD_VALUES.get(key, 0)
        padded = []
        for r in rows:
            pad = [fill] * (longest - len(r[key]))
            padded.append(pad + r[key] if padding_side == "left" else r[key] + pad)
        batch[key] = torch.tensor(padded, dtype=torch.long)
    return batch


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first, stable on ties)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def pad_id_of(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id
    if pad is None:
        raise ValueError("tokenizer has no pad token (load_backbone sets one)")
    return int(pad)
