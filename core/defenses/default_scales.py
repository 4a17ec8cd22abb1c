"""Default radial scales S for MSLR: the authors' Table 6 values, plus one rule for other sizes.

Table 6 as the code has it (docs/reference-implementation.md §8; ``TrainConfig.mslr_scales`` overrides all of this):

* BERT-base (768 wide, 12 layers): [1, 4, 8, 12, 16, 20, 24, 28] (the code dropped the paper's 32)
* RoBERTa-base (768, 12): [1, 2, 4, 6, 8, 10, 12, 14, 16]
* BERT-large / RoBERTa-large (1024, 24): [1, 2, ..., 9]
* Llama-family decoders (any size): [1, 2, 3, 4]

Rule for encoders not in the table (``profile="default"``; the ``reference`` profile instead takes the
family's Table 6 list as is: the BERT-base list for BERT-like encoders and DistilBERT, RoBERTa-base for
RoBERTa-like ones, [1..9] from 1024 wide or 24 layers up):

* hidden >= 1024 or >= 24 layers: the large-model list [1..9] (the authors used it for both families);
* otherwise take the family's base list (BERT-like and DistilBERT: the BERT-base list; RoBERTa-like: the
  RoBERTa-base list) and keep its first ``n = round(len(list) * sqrt(hidden / 768))`` entries
  (at least 2, at most the whole list).

Why: with Kaiming-initialised L and R, ||dW||_F / sqrt(in*out) grows like rms(S) / sqrt(hidden), while
BERT-family weights start from a width-independent std (initializer_range 0.02); truncating S so that
rms(S) scales like sqrt(hidden / 768) keeps the size of dW relative to W0 at the authors' BERT-base value.
Truncation keeps the authors' own values and is monotone in the width.

Resulting lists: MiniLM-L6 (384 wide, 6 layers; the default ``minilm``) -> [1, 4, 8, 12, 16, 20]
(rms 12.1 vs 16.7 for BERT-base, ratio 0.72 ~ sqrt(1/2)); under ``reference`` it gets
[1, 4, ..., 28], the authors' setting (bench/results/fidelity.md has what it gives on MiniLM).
DistilBERT-base (768, 6) -> the BERT-base list either way.
"""

from __future__ import annotations

import math

BERT_BASE: list[float] = [1, 4, 8, 12, 16, 20, 24, 28]
BERT_BASE_PAPER: list[float] = [1, 4, 8, 12, 16, 20, 24, 28, 32]  # paper-literal Table 6 (the code drops 32)
ROBERTA_BASE: list[float] = [1, 2, 4, 6, 8, 10, 12, 14, 16]
LARGE: list[float] = [1, 2, 3, 4, 5, 6, 7, 8, 9]
LLAMA: list[float] = [1, 2, 3, 4]


def default_scales(family: str, hidden_size: int, num_layers: int, profile: str = "default") -> list[float]:
    """S for a backbone of this family and size (see the module docstring for the rule)."""
    if family == "llama":
        return [float(s) for s in LLAMA]
    if family not in ("bert", "roberta", "distilbert"):
        raise ValueError(f"no default MSLR scales for family {family!r}")
    if hidden_size >= 1024 or num_layers >= 24:
        return [float(s) for s in LARGE]
    base = ROBERTA_BASE if family == "roberta" else BERT_BASE
    if profile == "reference":
        return [float(s) for s in base]
    n = round(len(base) * math.sqrt(hidden_size / 768))
    return [float(s) for s in base[: min(len(base), max(2, n))]]
