"""The training loop's checkpoints: which tensors they hold, the state carried from epoch to epoch, and
the resume check (same settings, same data, same tensors) and restore.

``last.safetensors`` after every epoch holds the trainable tensors (plus the frozen random head and MSLR
tensors, so a rebuilt model matches exactly), optimizer, scheduler, GradScaler, every RNG state (python,
torch CPU/CUDA, the train and aux generators), the per-epoch history and the best epoch;
``best-epochN.safetensors`` holds the best state (`core.training.checkpoint_file` writes them).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.errors import ConfigError
from core.models.backbones import unwrap
from core.models.heads import head_modules
from core.training.checkpoint_file import load_checkpoint, save_checkpoint

CKPT_FORMAT = 1
LAST = "last.safetensors"


def state_keys(model: nn.Module) -> list[str]:
    """State-dict keys (of ``model`` as passed) that checkpoints hold: trainable parameters, plus the
    head and MSLR tensors (random at init, so a rebuilt model must get them back)."""
    from core.defenses.mslr import MultiScaleLowRankLinear

    base = unwrap(model)
    special: set[int] = set()
    try:
        special.update(id(base.get_submodule(name)) for name in head_modules(base))
    except (ConfigError, AttributeError):
        pass
    special.update(id(m) for m in base.modules() if isinstance(m, MultiScaleLowRankLinear))
    keys = {n for n, p in model.named_parameters() if p.requires_grad}
    for prefix, module in model.named_modules():
        if id(module) in special:
            keys.update(f"{prefix}.{k}" if prefix else k for k in module.state_dict())
    own = model.state_dict()
    return [k for k in own if k in keys]


def snapshot(model: nn.Module, keys: Sequence[str]) -> dict[str, torch.Tensor]:
    own = model.state_dict()
    return {k: own[k].detach().to("cpu", copy=True) for k in keys}


def load_snapshot(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    own = model.state_dict()
    unknown = [k for k in state if k not in own]
    if unknown:
        raise ConfigError(f"checkpoint tensors do not fit this model (e.g. {unknown[:3]}): was it built "
                          f"with another method or backbone?")
    with torch.no_grad():
        for k, v in state.items():
            if own[k].shape != v.shape:
                raise ConfigError(f"checkpoint tensor {k} has shape {tuple(v.shape)}, model has "
                                  f"{tuple(own[k].shape)}")
            own[k].copy_(v)


def best_name(epoch: int) -> str:
    return f"best-epoch{epoch}.safetensors"


def clear_checkpoints(ckpt_dir: Path, keep: str | None = None) -> None:
    for f in ckpt_dir.glob("best-epoch*.safetensors"):
        if f.name != keep:
            f.unlink(missing_ok=True)


def config_diff(saved: Mapping[str, Any], now: Mapping[str, Any], defaults: Mapping[str, Any] | None = None
                ) -> list[str]:
    """Keys that differ. A setting newer than the checkpoint counts as unchanged at its default value,
    so upgrading the software does not strand runs in progress."""
    defaults = defaults or {}
    return sorted(k for k in set(saved) | set(now) if saved.get(k, defaults.get(k)) != now.get(k))


@dataclass
class Optimisation:
    """Everything that steps and is checkpointed besides the weights."""

    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any  # torch.amp.GradScaler for fp16, else None
    train_gen: torch.Generator  # training order
    aux_gen: torch.Generator  # aux minibatch draws

    def rng_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "python": random.getstate(),
            "torch": torch.get_rng_state(),
            "train_gen": self.train_gen.get_state(),
            "aux_gen": self.aux_gen.get_state(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def restore_rng(self, state: Mapping[str, Any]) -> None:
        random.setstate(state["python"])
        torch.set_rng_state(state["torch"])
        self.train_gen.set_state(state["train_gen"])
        self.aux_gen.set_state(state["aux_gen"])
        if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class TrainState:
    """What carries from one epoch to the next, and through ``last.safetensors``."""

    history: list[dict[str, Any]] = field(default_factory=list)  # `EpochRecord.as_json()` per epoch
    best_epoch: int = 0  # 0: none yet
    best_score: float = -math.inf
    best_state: dict[str, torch.Tensor] | None = None
    start_epoch: int = 0  # epochs completed before this call
    ref_average: list[torch.Tensor | None] | None = None  # moving average of g_c (ga_ref_momentum > 0)


@dataclass
class Checkpoints:
    """The checkpoint folder of one run and the fingerprint a resume must match."""

    folder: Path
    fingerprint: dict[str, Any]

    def open(self, resume: bool, model: nn.Module, config: Any, opt: Optimisation, device: Any) -> TrainState:
        """Restore the state after the last completed epoch (``resume``), or clear old checkpoints."""
        self.folder.mkdir(parents=True, exist_ok=True)
        last = self.folder / LAST
        if resume and last.exists():
            return self._restore(load_checkpoint(last), model, config, opt, device)
        if not resume:
            last.unlink(missing_ok=True)
            clear_checkpoints(self.folder)
        return TrainState()

    def _check(self, ck: Mapping[str, Any], config: Any) -> None:
        last = self.folder / LAST
        if ck.get("format") != CKPT_FORMAT:
            raise ConfigError(f"{last}: unknown checkpoint format")
        defaults = {k: f.default for k, f in type(config).model_fields.items()}
        changed = config_diff(ck["fingerprint"]["config"], self.fingerprint["config"], defaults)
        if changed:
            raise ConfigError(f"cannot resume from {last}: settings changed since it was written "
                              f"({', '.join(changed)}); start afresh (resume=False) or restore them")
        for part in ("data", "state_keys"):
            if ck["fingerprint"][part] != self.fingerprint[part]:
                raise ConfigError(f"cannot resume from {last}: the {part.replace('_', ' ')} differ "
                                  f"from the interrupted run")

    def _restore(self, ck: Mapping[str, Any], model: nn.Module, config: Any, opt: Optimisation,
                 device: Any) -> TrainState:
        self._check(ck, config)
        load_snapshot(model, ck["model"])
        opt.optimizer.load_state_dict(ck["optimizer"])
        opt.scheduler.load_state_dict(ck["scheduler"])
        if opt.scaler is not None and ck.get("scaler"):
            opt.scaler.load_state_dict(ck["scaler"])
        opt.restore_rng(ck["rng"])
        state = TrainState(history=list(ck["history"]), best_epoch=int(ck["best_epoch"]),
                           best_score=float(ck["best_score"]), start_epoch=int(ck["epoch"]))
        if ck.get("ref_average") is not None:
            state.ref_average = [None if g is None else g.to(device) for g in ck["ref_average"]]
        if ck.get("best_file"):
            state.best_state = load_checkpoint(self.folder / ck["best_file"])["model"]
        return state

    def save(self, epoch: int, improved: bool, state: TrainState, model: nn.Module, keys: Sequence[str],
             opt: Optimisation) -> None:
        """After epoch ``epoch`` (1-based): the best state when it improved, then ``last.safetensors``."""
        # None until the fixed epoch is reached (fixed_epoch: earlier epochs are never "best")
        best_file = best_name(state.best_epoch) if state.best_epoch else None
        if improved:
            save_checkpoint({"epoch": state.best_epoch, "model": state.best_state},
                            self.folder / best_name(state.best_epoch))
        save_checkpoint({
            "format": CKPT_FORMAT,
            "epoch": epoch,  # epochs completed
            "fingerprint": self.fingerprint,
            "model": snapshot(model, keys),
            "optimizer": opt.optimizer.state_dict(),
            "scheduler": opt.scheduler.state_dict(),
            "scaler": opt.scaler.state_dict() if opt.scaler is not None else None,
            "rng": opt.rng_state(),
            "ref_average": None if state.ref_average is None else [
                None if g is None else g.detach().to("cpu", copy=True) for g in state.ref_average],
            "history": state.history,
            "best_epoch": state.best_epoch,
            "best_score": state.best_score,
            "best_file": best_file,
        }, self.folder / LAST)
        clear_checkpoints(self.folder, keep=best_file)
