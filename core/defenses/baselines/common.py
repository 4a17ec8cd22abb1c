"""Helpers shared by the end-to-end baselines: batched prediction, representations, and the CACC/ASR
accounting of post-training detectors (docs/reference-implementation.md §5)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch

from core.training.predict import model_device

ProbaFn = Callable[[Sequence[str]], np.ndarray]  # texts -> (N, C) softmax probabilities

# Decoder-only families have no [CLS]: their sentence representation is the last real token.
DECODER_TYPES = {"gpt2", "llama", "mistral", "qwen2", "gemma", "phi", "opt", "gpt_neox"}


def unwrap(model: Any) -> Any:
    """The transformers model under a PEFT wrapper."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def predict_proba(model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int = 32,
                  max_length: int = 512) -> np.ndarray:
    """Softmax outputs (N, C) in eval mode; restores the model's mode (the engine's batched predictor)."""
    from core.training.predict import predict_logits

    logits = predict_logits(model, tokenizer, texts, batch_size=batch_size, max_length=max_length)
    return logits.softmax(-1).numpy().astype(np.float64)


def proba_fn(model: Any, tokenizer: Any, batch_size: int = 32, max_length: int = 512) -> ProbaFn:
    return lambda texts: predict_proba(model, tokenizer, texts, batch_size, max_length)


@torch.no_grad()
def sentence_representation(model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int = 32,
                            max_length: int = 512,
                            pool: Literal["auto", "cls", "last"] = "auto") -> np.ndarray:
    """Last-layer hidden state of the first ([CLS]) token, as OpenBackdoor's `get_repr_embeddings`
    (BKI); for decoder-only models the last non-padding token (they have no [CLS])."""
    inner = unwrap(model)
    base = getattr(inner, "base_model", inner)
    if pool == "auto":
        pool = "last" if getattr(inner.config, "model_type", "") in DECODER_TYPES else "cls"
    device = model_device(model)
    was_training = model.training
    model.eval()
    out: list[np.ndarray] = []
    try:
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                            max_length=max_length, return_tensors="pt").to(device)
            hidden = base(**enc).last_hidden_state
            if pool == "cls":
                rep = hidden[:, 0]
            else:
                mask = enc["attention_mask"]
                if getattr(tokenizer, "padding_side", "right") == "left":
                    rep = hidden[:, -1]
                else:
                    last = mask.sum(1) - 1
                    rep = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
            out.append(rep.float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out)


def final_linear(model: Any) -> torch.nn.Linear:
    """The classifier's output projection: the last nn.Linear with out_features == num_labels."""
    inner = unwrap(model)
    num_labels = int(getattr(inner.config, "num_labels", 0))
    found = None
    for _, module in inner.named_modules():
        if isinstance(module, torch.nn.Linear) and module.out_features == num_labels:
            found = module
    if found is None:
        raise ValueError("could not find the classifier's output layer (nn.Linear with num_labels outputs)")
    return found


@torch.no_grad()
def penultimate_features(model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int = 32,
                         max_length: int = 512) -> np.ndarray:
    """What the output layer sees: BERT's pooler output, RoBERTa's tanh(classifier.dense(CLS)), the
    Llama head's hidden layer. CUBE clusters this (OpenBackdoor's `compute_hidden`)."""
    layer = final_linear(model)
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, inputs, _o: captured.append(inputs[0].detach()))
    device = model_device(model)
    was_training = model.training
    model.eval()  # dropout off: the input of the output layer is then the clean representation
    try:
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                            max_length=max_length, return_tensors="pt").to(device)
            model(**enc)
    finally:
        handle.remove()
        model.train(was_training)
    feats = [c.float().cpu() for c in captured]
    # A Llama-style head sees every position; keep the pooled (last) one like the logits do.
    feats = [f[:, -1] if f.ndim == 3 else f for f in feats]
    return torch.cat(feats).numpy()


# ---------------------------------------------------------------------------------------------------
# Accounting for post-training detectors (reference-implementation.md §5)

Scheme = Literal["flip", "reject"]


def score_with_flags(preds: Sequence[int], labels: Sequence[int], flags: Sequence[bool],
                     num_classes: int, scheme: Scheme = "flip") -> float:
    """Accuracy of `preds` against `labels` once flagged rows are handled by `scheme`.

    flip (MuScleLoRA's copy): a flagged row's label becomes C−1−y (binary only), so it counts as
        correct when the prediction is wrong: P(¬flag ∧ pred=y) + P(flag ∧ pred≠y).
    reject (original OpenBackdoor): a flagged row's label becomes the impossible class C, so it always
        counts as wrong: P(¬flag ∧ pred=y).
    Used on the clean test set this is CACC; on the poisoned probe (labels = target) it is ASR.
    """
    p = np.asarray(preds, dtype=int)
    y = np.asarray(labels, dtype=int)
    f = np.asarray(flags, dtype=bool)
    if not (len(p) == len(y) == len(f)):
        raise ValueError("preds, labels and flags must have the same length")
    if len(p) == 0:
        raise ValueError("nothing to score")
    if scheme == "flip":
        if num_classes != 2:
            raise ValueError("the flip scheme is defined for binary tasks only (as upstream asserts)")
        effective = np.where(f, num_classes - 1 - y, y)
    elif scheme == "reject":
        effective = np.where(f, num_classes, y)
    else:
        raise ValueError(f"unknown scheme {scheme!r}")
    return float((p == effective).mean())


def detector_metrics(clean_preds: Sequence[int], clean_labels: Sequence[int], clean_flags: Sequence[bool],
                     poison_preds: Sequence[int], poison_flags: Sequence[bool], target: int,
                     num_classes: int) -> dict[str, float]:
    """CACC and ASR under both schemes, plus what the detector did on each set.

    `poison_*` are the probe rows (true label ≠ target, trigger applied); ASR counts them against the
    target label, as reference-implementation.md §5 does.
    """
    poison_labels = [target] * len(poison_preds)
    out = {
        "cacc_reject": score_with_flags(clean_preds, clean_labels, clean_flags, num_classes, "reject"),
        "asr_reject": score_with_flags(poison_preds, poison_labels, poison_flags, num_classes, "reject"),
        "clean_flagged": float(np.mean(np.asarray(clean_flags, dtype=bool))),  # false rejection rate
        "poison_flagged": float(np.mean(np.asarray(poison_flags, dtype=bool))),  # detection rate
        "cacc_undefended": float(np.mean(np.asarray(clean_preds) == np.asarray(clean_labels))),
        "asr_undefended": float(np.mean(np.asarray(poison_preds) == target)),
    }
    if num_classes == 2:
        out["cacc_flip"] = score_with_flags(clean_preds, clean_labels, clean_flags, 2, "flip")
        out["asr_flip"] = score_with_flags(poison_preds, poison_labels, poison_flags, 2, "flip")
    return out


def corrector_metrics(clean_preds: Sequence[int], clean_labels: Sequence[int], poison_preds: Sequence[int],
                      target: int) -> dict[str, float]:
    """Plain CACC/ASR after an input corrector (ONION) rewrote the texts."""
    return {"cacc": float(np.mean(np.asarray(clean_preds) == np.asarray(clean_labels))),
            "asr": float(np.mean(np.asarray(poison_preds) == target))}
