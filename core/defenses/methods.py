"""Turn a loaded backbone into the model a method trains, and export the result.

The methods are `core.defenses.registry.DefenseSpec`s, one module per family in `core.defenses.kinds`
(docs/reference-implementation.md §2.4):

==============  ============================================================  ==========
method          trainable                                                      GA
==============  ============================================================  ==========
muscle          LoRA (Q, V) + MSLR L, R on the penultimate linear              yes
muscle-no-ga    LoRA + MSLR                                                    no
muscle-no-ms    LoRA                                                           yes
lora            LoRA                                                           no
ga-only         everything (full fine-tuning, classifier included)             yes
vanilla         everything                                                     no
adapter         bottleneck adapters after each FFN output (`adapter.py`)       no
prefix          PEFT prefix-tuning virtual key/values                          no
==============  ============================================================  ==========

Except for the full fine-tuning methods, the head is frozen at its random initialisation, as in the
authors' code, unless ``train_head`` is set (reference-implementation.md §2.1). The MSLR base copy W0 is always frozen.
The building blocks (LoRA, prefix, adapters, MSLR) are in `core.defenses.parts`.

Random parts (LoRA A, MSLR L and R, adapters, prefix) are drawn from ``config.seed`` without touching
the caller's RNG, so the same config gives the same initial model.
"""

from __future__ import annotations

import contextlib
import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.defenses.adapter import BottleneckAdapter
from core.defenses.mslr import MultiScaleLowRankLinear
from core.defenses.parts import install_mslr
from core.defenses.registry import get_defense
from core.errors import ConfigError
from core.models.backbones import family as model_family
from core.models.backbones import quiet_transformers, unwrap
from core.models.heads import LlamaClassificationHead, head_modules

ADAPTER_FORMAT = "muscle-adapter"
ADAPTER_VERSION = 1
ADAPTER_JSON = "muscle_adapter.json"
ADAPTER_TENSORS = "muscle_tensors.safetensors"


@dataclass
class DefenseInfo:
    """What `apply_defense` did; kept on the unwrapped model as ``_muscle_defense``."""

    family: str
    method: str
    config: dict[str, Any]
    mslr_modules: list[str] = field(default_factory=list)
    mslr_scales: list[float] | None = None
    lora_targets: list[str] | None = None
    adapter_modules: list[str] = field(default_factory=list)
    prefix_tokens: int = 0


def defense_info(model: nn.Module) -> DefenseInfo | None:
    return getattr(unwrap(model), "_muscle_defense", None)


def prefix_tokens(model: nn.Module) -> int:
    """Virtual tokens the model prepends (they use position slots: shorten max_length by this)."""
    info = defense_info(model)
    return info.prefix_tokens if info else 0


@contextlib.contextmanager
def _seeded(seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _is_mslr_param(name: str, mslr_names: list[str]) -> bool:
    return any(name == m or name.startswith(m + ".") for m in mslr_names)


def _set_head_trainable(base: nn.Module, train_head: bool, mslr_names: list[str]) -> None:
    """Head on/off; MSLR parts inside a head (RoBERTa/Llama/DistilBERT) keep their own rule."""
    for prefix in head_modules(base):
        module = base.get_submodule(prefix)
        for name, param in module.named_parameters():
            full = f"{prefix}.{name}"
            if _is_mslr_param(full, mslr_names):
                continue
            param.requires_grad_(train_head)


def apply_defense(model: nn.Module, config: Any, family: str | None = None) -> nn.Module:
    """Set up ``config.method`` on a model from `load_backbone`; returns the model to train.

    The result may be a PEFT wrapper (LoRA, prefix): use it for forward passes, and
    `core.models.backbones.unwrap` to reach the transformers model.
    """
    fam = family or model_family(model)
    method = config.method
    spec = get_defense(method)
    info = DefenseInfo(family=fam, method=method, config=config.model_dump())
    base = unwrap(model)
    if getattr(base, "_muscle_defense", None) is not None:
        raise ValueError("apply_defense was already applied to this model")
    with _seeded(config.seed + 7):
        if spec.trains == "full":
            model.requires_grad_(True)
            base._muscle_defense = info
            return model
        base.requires_grad_(False)
        assert spec.install is not None  # register_defense checks it
        model = spec.install(model, config, fam, info)
        if spec.mslr:
            model = install_mslr(model, config, fam, info)
    base = unwrap(model)
    _set_head_trainable(base, bool(config.train_head), info.mslr_modules)
    base._muscle_defense = info
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(f"method {method!r} left no trainable parameter")
    return model


# ----------------------------------------------------------------------------------------------------
# Export


def _merged_copy(model: nn.Module, inplace: bool) -> nn.Module:
    from peft import PeftModel

    work = model if inplace else copy.deepcopy(model)
    work.eval()
    if isinstance(work, PeftModel):
        work = work.merge_and_unload()
    base = unwrap(work)
    for name, module in list(base.named_modules()):
        if isinstance(module, MultiScaleLowRankLinear):
            parent_name, _, attr = name.rpartition(".")
            parent = base.get_submodule(parent_name) if parent_name else base
            setattr(parent, attr, module.merged_linear())
    if isinstance(getattr(base, "score", None), LlamaClassificationHead):
        base.score = base.score.collapsed()  # no activation between dense and out_proj: one matrix
    return base


def export_merged(model: nn.Module, tokenizer: Any, out_dir: str | Path, family: str | None = None,
                  *, inplace: bool = False) -> Path | None:
    """Write a plain transformers folder (safetensors + tokenizer): LoRA merged (PEFT
    ``merge_and_unload``), MSLR merged into the penultimate linear, the Llama head collapsed into
    ``score``. It loads with ``AutoModelForSequenceClassification`` / ``AutoTokenizer`` and no custom code.

    Returns None for ``adapter`` and ``prefix`` (not mergeable: use `export_adapter`). Works on a deep
    copy unless ``inplace`` (saves memory for big models; the model is then merged and unwrapped).
    """
    info = defense_info(model)
    if info is not None and not get_defense(info.method).mergeable:
        return None
    fam = family or model_family(model)
    base = _merged_copy(model, inplace)
    if hasattr(base, "_muscle_defense"):
        del base._muscle_defense
    base.requires_grad_(False)
    if fam == "llama" and not isinstance(getattr(base, "score", None), nn.Linear):
        raise RuntimeError("Llama head did not collapse into a Linear score")
    base.config.architectures = [type(base).__name__]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with quiet_transformers():
        base.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
    return out


# Module names (PEFT `modules_to_save`, matched by suffix) whose merged weights a standard PEFT adapter
# carries whole: the head, and the layer MSLR wraps (its low-rank path is merged into it).
PEFT_SAVED_MODULES: dict[str, list[str]] = {
    "bert": ["pooler", "classifier"],
    "roberta": ["classifier"],
    "distilbert": ["pre_classifier", "classifier"],
    "llama": ["score"],
}


def _is_lora(model: nn.Module) -> bool:
    from peft import PeftType

    config = getattr(model, "peft_config", {}).get("default")
    return config is not None and config.peft_type == PeftType.LORA


def write_peft_adapter(model: nn.Module, out: Path, base_name: str | None) -> None:
    """A standard PEFT adapter at the root of `out`: `adapter_config.json` + `adapter_model.safetensors`,
    loadable with `PeftModel.from_pretrained(base, out)` on the base model (with the same labels). The LoRA
    weights as trained; the head and the MSLR layer as `modules_to_save` with their merged weights (MSLR
    is a low-rank update of its layer; the Llama head collapses into `score`), so nothing else is needed."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    info = defense_info(model)
    assert info is not None
    state = {k: v for k, v in get_peft_model_state_dict(model).items() if "lora_" in k}
    merged = _merged_copy(model, inplace=False)
    saved = PEFT_SAVED_MODULES[info.family]
    for name, module in merged.named_modules():
        if name and any(name == t or name.endswith("." + t) for t in saved):
            for key, value in module.state_dict().items():
                state[f"base_model.model.{name}.{key}"] = value
    config = copy.deepcopy(model.peft_config["default"])
    config.modules_to_save = list(saved)
    config.base_model_name_or_path = base_name
    config.save_pretrained(str(out))
    save_file({k: v.detach().to("cpu").contiguous() for k, v in state.items()},
              str(out / "adapter_model.safetensors"), metadata={"format": "pt"})


def export_adapter(model: nn.Module, out_dir: str | Path, base_name: str | None = None) -> Path | None:
    """The trained parts alone, for users who keep the base model.

    * ``adapter_config.json`` + ``adapter_model.safetensors`` (LoRA-based methods): a standard PEFT
      adapter, `PeftModel.from_pretrained(base, out_dir)` (see `write_peft_adapter`); `base_name` is the
      portable base model name it records (a hub id);
    * ``peft/``: PEFT ``save_pretrained`` (LoRA or prefix weights, loadable with PEFT);
    * ``muscle_tensors.safetensors``: every other tensor the base checkpoint does not hold: MSLR
      ``L``, ``R``, ``K`` and its frozen base ``W0``/``b0``, the head (frozen random or trained, incl. the
      Llama ``score.dense``/``score.out_proj``), adapter ``down``/``up``. Keys are module paths inside
      the transformers model (e.g. ``bert.pooler.dense.L``);
    * ``muscle_adapter.json``: where each part goes and the settings to rebuild it (see
      `load_exported_adapter`).

    Returns None for full fine-tuning (``vanilla``, ``ga-only``): there is no adapter, export the
    merged model instead.
    """
    from peft import PeftModel
    from safetensors.torch import save_file

    info = defense_info(model)
    if info is None:
        raise ValueError("export_adapter needs a model prepared by apply_defense")
    if not get_defense(info.method).exports_adapter:
        return None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = unwrap(model)
    peft_dir = None
    if isinstance(model, PeftModel):
        model.save_pretrained(out / "peft")
        peft_dir = "peft"
        if _is_lora(model):
            write_peft_adapter(model, out, base_name)

    tensors, mslr, adapters = _own_tensors(base)
    heads = head_modules(base)
    for prefix in heads:
        for key, value in base.get_submodule(prefix).state_dict().items():
            full = f"{prefix}.{key}"
            if not _is_mslr_param(full, info.mslr_modules) and "lora_" not in full:
                tensors[full] = value
    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(out / ADAPTER_TENSORS))
    meta = _adapter_meta(base.config, info, peft_dir, mslr, heads, adapters)
    (out / ADAPTER_JSON).write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
    return out


def _own_tensors(base: nn.Module) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]], list[str]]:
    """The MSLR and bottleneck-adapter tensors (the base checkpoint has none of them), the MSLR modules'
    settings and the adapter module names."""
    tensors: dict[str, torch.Tensor] = {}
    mslr: list[dict[str, Any]] = []
    adapters: list[str] = []
    for name, module in base.named_modules():
        if isinstance(module, MultiScaleLowRankLinear):
            mslr.append({"module": name, "scales": module.scales, "rank": module.rank,
                         "alpha": module.alpha, "init": module.init,
                         "merged_weight": "W0 + (alpha/rank) * R @ diag(K) @ L; bias b0"})
            for key, value in module.state_dict().items():
                tensors[f"{name}.{key}"] = value
        elif isinstance(module, BottleneckAdapter):
            adapters.append(name)
            for sub in ("down", "up"):
                for key, value in getattr(module, sub).state_dict().items():
                    tensors[f"{name}.{sub}.{key}"] = value
    return tensors, mslr, adapters


def _adapter_meta(cfg: Any, info: DefenseInfo, peft_dir: str | None, mslr: list[dict[str, Any]],
                  heads: list[str], adapters: list[str]) -> dict[str, Any]:
    """``muscle_adapter.json``: where each exported part goes and the settings to rebuild it."""
    return {
        "format": ADAPTER_FORMAT,
        "version": ADAPTER_VERSION,
        "family": info.family,
        "method": info.method,
        "base_model": getattr(cfg, "_name_or_path", None),
        "model_type": cfg.model_type,
        "num_labels": cfg.num_labels,
        "id2label": {str(k): v for k, v in cfg.id2label.items()},
        "peft_dir": peft_dir,
        "tensors_file": ADAPTER_TENSORS,
        "mslr": mslr,
        "head_modules": heads,
        "llama_head": {"inner": 16, "bias": False, "dropout": 0.1} if info.family == "llama" else None,
        "adapters": {"modules": adapters, "bottleneck": info.config.get("adapter_bottleneck")}
        if adapters else None,
        "train_config": info.config,
        "how_to_apply": (
            "Load the base model as a sequence classifier with these labels (for Llama-family models, "
            "replace `score` by dense(hidden->16)->dropout->out_proj(16->C), no biases); apply the PEFT "
            "adapter in peft_dir; replace each MSLR module's Linear by W0 + (alpha/rank) R diag(K) L "
            "(bias b0); load the remaining tensors by name. "
            "core.defenses.methods.load_exported_adapter does all of it."),
    }


@dataclass
class _Labels:
    id2label: dict[int, str]


def load_exported_adapter(adapter_dir: str | Path, base_source: str | None = None
                          ) -> tuple[nn.Module, Any]:
    """Rebuild a trained model from `export_adapter` output plus the base checkpoint (eval mode)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from core.config import TrainConfig
    from core.models.backbones import load_backbone

    folder = Path(adapter_dir)
    meta = json.loads((folder / ADAPTER_JSON).read_text(encoding="utf-8"))
    if meta.get("format") != ADAPTER_FORMAT:
        raise ConfigError(f"{folder} is not a {ADAPTER_FORMAT} folder")
    config = TrainConfig(**meta["train_config"])
    labels = _Labels({int(k): v for k, v in meta["id2label"].items()})
    model, tokenizer = load_backbone(base_source or meta["base_model"], labels, seed=config.seed)
    model = apply_defense(model, config, meta["family"])
    if meta.get("peft_dir"):
        peft_weights = load_file(str(folder / meta["peft_dir"] / "adapter_model.safetensors"))
        result = set_peft_model_state_dict(model, peft_weights)
        # PEFT loads prefix embeddings itself but still lists "prompt_embeddings" as unexpected.
        unexpected = [k for k in getattr(result, "unexpected_keys", []) if k != "prompt_embeddings"]
        if unexpected:
            raise ConfigError(f"PEFT weights do not fit the model: {unexpected[:5]}")
    tensors = load_file(str(folder / meta["tensors_file"]))
    base = unwrap(model)
    own = dict(base.state_dict())
    unknown = [k for k in tensors if k not in own]
    if unknown:
        raise ConfigError(f"adapter tensors do not fit the model: {unknown[:5]}")
    with torch.no_grad():
        for key, value in tensors.items():
            own[key].copy_(value)
    model.eval()
    return model, tokenizer


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) for every parameter that trains, in a stable order."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def describe(model: nn.Module) -> dict[str, Any]:
    """Small summary for logs and metrics.json."""
    info = defense_info(model)
    trainable = sum(p.numel() for _, p in trainable_parameters(model))
    total = sum(p.numel() for p in model.parameters())
    out: dict[str, Any] = {"trainable_params": trainable, "total_params": total}
    if info is not None:
        data = asdict(info)
        data.pop("config", None)
        out.update(data)
    return out
