"""Which family a transformers model belongs to (where the defense puts its layers), under PEFT wrappers."""

from __future__ import annotations

from typing import Any

from torch import nn

from core.errors import ConfigError

Family = str  # "bert" | "roberta" | "distilbert" | "llama"
FAMILIES: tuple[str, ...] = ("bert", "roberta", "distilbert", "llama")

# model_type -> family. Decoders must also pass the structural check in `_check_structure`.
MODEL_TYPE_FAMILY: dict[str, str] = {
    "bert": "bert",
    "roberta": "roberta",
    "xlm-roberta": "roberta",
    "camembert": "roberta",
    "distilbert": "distilbert",
    "llama": "llama",
    "mistral": "llama",
    "qwen2": "llama",
    "qwen3": "llama",
}

SUPPORTED_TEXT = ("BERT-like encoders (bert), RoBERTa-like encoders (roberta, xlm-roberta, camembert), "
                   "DistilBERT, and Llama-family decoders (llama, mistral, qwen2, qwen3)")


def unwrap(model: nn.Module) -> nn.Module:
    """The plain transformers model under PEFT wrappers (PeftModel.base_model.model)."""
    inner: Any = model
    get_base = getattr(inner, "get_base_model", None)
    if callable(get_base):
        inner = get_base()
    return inner


def family_of_model_type(model_type: str, architecture: str | None = None) -> str:
    fam = MODEL_TYPE_FAMILY.get(model_type)
    if fam is None:
        arch = f" ({architecture})" if architecture else ""
        raise ConfigError(f"unsupported architecture: model_type {model_type!r}{arch}. The MuScleLoRA "
                          f"defense knows where its layers go only for {SUPPORTED_TEXT}.")
    return fam


def family(model: nn.Module) -> str:
    """``bert`` | ``roberta`` | ``distilbert`` | ``llama`` for a (possibly PEFT-wrapped) model."""
    base = unwrap(model)
    config = getattr(base, "config", None)
    if config is None:
        raise ConfigError(f"{type(base).__name__} is not a transformers model")
    return family_of_model_type(getattr(config, "model_type", ""), type(base).__name__)
