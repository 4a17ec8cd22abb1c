"""ONION (Qi et al., 2021): delete the words whose removal lowers a language model's perplexity.

Per text (split on whitespace): suspicion f_i = PPL(text) − PPL(text without word i); every word with
f_i ≥ threshold (0 upstream) is deleted. Applied to every test input before classification
(MuScleLoRA's copy sets `correction=True`; upstream ONION never corrects). See
docs/reference-implementation.md §7.

Where we differ from the authors' copy (docs/analysis.md):
* the per-sentence cross-entropy is averaged over real tokens only (attention mask), not over the
  padding positions that batching adds, so a text's PPL does not depend on its batch-mates
  (`mask_padding=False` restores the upstream loss);
* a text of at most one word is returned unchanged (upstream drops it from the scored set).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from core.training.predict import model_device

PplFn = Callable[[Sequence[str]], np.ndarray]


def split_words(text: str) -> list[str]:
    return [w for w in text.strip().split(" ") if w]


def leave_one_out(words: Sequence[str]) -> list[str]:
    return [" ".join([*words[:i], *words[i + 1:]]) for i in range(len(words))]


def suspicion_scores(words: Sequence[str], ppl: PplFn) -> list[float]:
    """f_i = PPL(full) − PPL(without word i) for each word."""
    values = np.asarray(ppl([" ".join(words), *leave_one_out(words)]), dtype=np.float64)
    return [float(values[0] - v) for v in values[1:]]


def correct_text(text: str, ppl: PplFn, threshold: float = 0.0) -> str:
    words = split_words(text)
    if len(words) <= 1:
        return text
    scores = suspicion_scores(words, ppl)
    # NaN (a one-token variant has no predicted position) compares False: the word is kept.
    return " ".join(w for w, s in zip(words, scores, strict=True) if not s >= threshold)


class CausalLMPerplexity:
    """Perplexity of each text under a causal LM, batched; truncation at `max_length` tokens (96)."""

    def __init__(self, model: Any, tokenizer: Any, max_length: int = 96, batch_size: int = 32,
                 mask_padding: bool = True) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        if tokenizer.pad_token is None:  # GPT-2 has none; upstream pads with EOS
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "right"
        self.max_length = max_length
        self.batch_size = batch_size
        self.mask_padding = mask_padding

    @classmethod
    def from_pretrained(cls, path: str, device: str = "cpu", **kwargs: Any) -> CausalLMPerplexity:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path).to(device)
        return cls(model, tok, **kwargs)

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        out: list[np.ndarray] = []
        device = model_device(self.model)
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(list(texts[start:start + self.batch_size]), return_tensors="pt",
                                 padding=True, truncation=True, max_length=self.max_length).to(device)
            logits = self.model(**enc).logits.float()
            labels = enc["input_ids"][:, 1:]
            ce = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels, reduction="none")
            if self.mask_padding:
                mask = enc["attention_mask"][:, 1:].to(ce.dtype)
                loss = (ce * mask).sum(1) / mask.sum(1)  # 0/0 → NaN for a one-token text
            else:
                loss = ce.mean(1)  # upstream: padding positions count too
            out.append(torch.exp(loss).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)


class Onion:
    """`correct(texts) -> texts` with a perplexity function (any causal LM, or a stub in tests)."""

    def __init__(self, ppl: PplFn, threshold: float = 0.0) -> None:
        self.ppl = ppl
        self.threshold = threshold

    @classmethod
    def from_pretrained(cls, lm_path: str, threshold: float = 0.0, device: str = "cpu",
                        **kwargs: Any) -> Onion:
        return cls(CausalLMPerplexity.from_pretrained(lm_path, device=device, **kwargs), threshold)

    def correct(self, texts: Sequence[str]) -> list[str]:
        return [correct_text(t, self.ppl, self.threshold) for t in texts]
