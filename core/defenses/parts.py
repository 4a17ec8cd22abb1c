"""The building blocks the defenses install (`core.defenses.kinds` calls them through their specs):
PEFT LoRA, PEFT prefix tuning, bottleneck adapters and the multi-scale low-rank module (MSLR).

LoRA is PEFT's (``LoraConfig(r, lora_alpha, lora_dropout)`` on query/value per family, A Kaiming, B zero).
Prefix tuning uses PEFT's prefix encoder, but PEFT 0.21 passes ``past_key_values`` while transformers 5
models take ``cache``, so PEFT's own classification forward raises "Model does not support past key
values"; `PrefixTuningClassifier` calls the model with ``cache=`` itself. DistilBERT's attention has no
key/value cache at all, so ``prefix`` is refused for it (ConfigError).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from core.defenses.adapter import install_adapters
from core.defenses.default_scales import default_scales
from core.defenses.mslr import MultiScaleLowRankLinear
from core.errors import ConfigError
from core.models.backbones import unwrap
from core.models.heads import head_modules, penultimate_linear, penultimate_name

LORA_TARGETS: dict[str, list[str]] = {
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "distilbert": ["q_lin", "v_lin"],
    "llama": ["q_proj", "v_proj"],
}


def _peft_model_class() -> type:
    from peft import PeftModel

    class PrefixTuningClassifier(PeftModel):
        """PEFT prefix tuning for classification, calling transformers 5 models with ``cache=``."""

        def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, **kwargs):  # type: ignore[no-untyped-def]
            ref = input_ids if input_ids is not None else inputs_embeds
            batch = ref.shape[0]
            n_virtual = self.active_peft_config.num_virtual_tokens
            if attention_mask is None:
                attention_mask = torch.ones(ref.shape[:2], dtype=torch.long, device=ref.device)
            prefix_mask = attention_mask.new_ones(batch, n_virtual)
            kwargs.pop("cache", None)
            kwargs.pop("past_key_values", None)
            return self.base_model(input_ids=input_ids, inputs_embeds=inputs_embeds,
                                   attention_mask=torch.cat([prefix_mask, attention_mask], dim=1),
                                   cache=self.get_prompt(batch), **kwargs)

    return PrefixTuningClassifier


_PREFIX_CLASS: type | None = None


def _prefix_class() -> type:
    global _PREFIX_CLASS
    if _PREFIX_CLASS is None:
        _PREFIX_CLASS = _peft_model_class()
    return _PREFIX_CLASS


def lora_targets(config: Any, fam: str) -> list[str]:
    return list(config.lora_targets) if config.lora_targets else list(LORA_TARGETS[fam])


def default_scales_for(model: nn.Module, fam: str, profile: str) -> list[float]:
    cfg = unwrap(model).config
    hidden = int(getattr(cfg, "hidden_size", 0) or getattr(cfg, "dim", 0))
    layers = int(getattr(cfg, "num_hidden_layers", 0) or getattr(cfg, "n_layers", 0))
    return default_scales(fam, hidden, layers, profile)


def apply_lora(model: nn.Module, config: Any, fam: str) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    base = unwrap(model)
    targets = lora_targets(config, fam)
    linears = [n for n, m in base.named_modules() if isinstance(m, nn.Linear)]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in linears)]
    if missing:
        raise ConfigError(f"lora_targets {missing} match no Linear layer of this {fam} model")
    # Keep LoRA off the head and the MSLR layer (the authors wrap only the backbone).
    exclude = [penultimate_name(base), *head_modules(base)]
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=targets, exclude_modules=exclude, bias="none")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # PEFT probes a deprecated transformers API
        return get_peft_model(model, lora)


def apply_prefix(model: nn.Module, config: Any, fam: str) -> nn.Module:
    from peft import PrefixTuningConfig, TaskType

    if fam == "distilbert":
        raise ConfigError("method 'prefix' is not available for DistilBERT: its attention takes no "
                          "key/value cache, which prefix tuning needs. Use 'adapter' or 'lora' instead.")
    cfg = PrefixTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=config.prefix_tokens)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # PEFT probes a deprecated transformers API
        # The plain PeftModel base class: no `modules_to_save` copy of the head (we decide its freezing).
        return _prefix_class()(model, cfg)


def install_lora(model: nn.Module, config: Any, fam: str, info: Any) -> nn.Module:
    model = apply_lora(model, config, fam)
    info.lora_targets = lora_targets(config, fam)
    return model


def install_prefix(model: nn.Module, config: Any, fam: str, info: Any) -> nn.Module:
    model = apply_prefix(model, config, fam)
    info.prefix_tokens = config.prefix_tokens
    return model


def install_adapter(model: nn.Module, config: Any, fam: str, info: Any) -> nn.Module:
    info.adapter_modules = install_adapters(unwrap(model), fam, config.adapter_bottleneck)
    return model


def install_mslr(model: nn.Module, config: Any, fam: str, info: Any) -> nn.Module:
    """Replace the penultimate linear layer by `MultiScaleLowRankLinear` (the ``mslr`` part)."""
    parent, attr = penultimate_linear(model)
    layer = getattr(parent, attr)
    if not isinstance(layer, nn.Linear):
        raise ConfigError(f"the penultimate layer {penultimate_name(model)} is a "
                          f"{type(layer).__name__}, not a Linear: keep it out of lora_targets")
    scales = (list(config.mslr_scales) if config.mslr_scales
              else default_scales_for(model, fam, config.profile))
    setattr(parent, attr, MultiScaleLowRankLinear(layer, scales, rank=config.mslr_rank,
                                                  alpha=config.mslr_alpha, init=config.mslr_init))
    info.mslr_modules = [penultimate_name(model)]
    info.mslr_scales = [float(s) for s in scales]
    return model
