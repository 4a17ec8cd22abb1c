"""The training loop: AdamW + linear schedule, optional gradient alignment, per-epoch selection,
atomic per-epoch checkpoints and exact resume.

Per step (reference §3.2): forward the training batch (train mode), CE, backward (p.grad = g); with GA,
one fresh random minibatch of ``aux_batch_size`` clean aux rows (seeded generator), CE, and
``autograd.grad`` over the trainable parameters (g_c; ``.grad`` untouched), then the gate and the
alignment (`core.defenses.alignment`); then ``clip_grad_norm_``, ``optimizer.step``,
``scheduler.step``, ``zero_grad``.

After each epoch: accuracy on ``select`` (clean held-back rows) chooses the best epoch (highest, first
on ties); ``monitors`` (e.g. probes) are reported but never used for the choice. The best epoch's
trainable state is loaded at the end. ``config.fixed_epoch`` (canary calibration) overrides the choice:
that epoch is the best, and the run stops after it on the full run's LR schedule.

Checkpoints (``ckpt_dir``): ``last.safetensors`` after every epoch holds the trainable tensors (plus the frozen
random head and MSLR tensors, so a rebuilt model matches exactly), optimizer, scheduler, GradScaler,
every RNG state (python, torch CPU/CUDA, the train and aux generators), the per-epoch history and the
best epoch; ``best-epochN.safetensors`` holds the best state. Both are safetensors files (JSON metadata for
what is not a tensor: nothing is unpickled), written to a temporary file and moved into place.
``resume=True`` continues after the last completed epoch and, on CPU,
gives bit-identical results to an uninterrupted run with the same seed.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from core.config import CANARY_FIELDS, fields_with
from core.defenses.alignment import apply_alignment, mu_for_epoch
from core.errors import ConfigError, JobCancelled
from core.interface import ProgressEvent
from core.models.backbones import effective_max_length, unwrap
from core.models.heads import head_modules
from core.training.batching import collate, encode_texts, model_input_names, pad_id_of
from core.training.checkpoint_file import load_checkpoint, save_checkpoint
from core.training.device import autocast, resolve_device, resolve_precision
from core.training.predict import accuracy_on, reserved_positions

CKPT_FORMAT = 1
LAST = "last.safetensors"
# Settings a resume may differ in: they do not change the training trajectory (runtime choices, data knobs
# the data fingerprints already cover; the frequency analysis forks the RNG). Marked `runtime` on the field.
RUNTIME_FIELDS = fields_with("runtime")


@dataclass
class TrainOutcome:
    best_epoch: int  # 1-based
    per_epoch: list[dict[str, Any]]
    wall_seconds: float  # this call only
    resumed_from_epoch: int = 0  # epochs already done when this call started
    trainable_params: int = 0
    precision: str = "fp32"
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------
# Helpers


def fingerprint_rows(rows: Sequence[Any]) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(str(r.text).encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
        h.update(str(int(r.label)).encode())
        h.update(b"\x01")
    return h.hexdigest()


@torch.no_grad()
def moving_average(average: list[torch.Tensor | None] | None, grads: Sequence[torch.Tensor | None],
                   momentum: float) -> list[torch.Tensor | None]:
    """avg <- momentum * avg + (1 - momentum) * g per tensor (in place); the first call copies ``grads``.
    A tensor without a gradient this step keeps its average."""
    if average is None:
        return [None if g is None else g.detach().clone() for g in grads]
    out: list[torch.Tensor | None] = []
    for avg, g in zip(average, grads, strict=True):
        if g is None:
            out.append(avg)
        elif avg is None:
            out.append(g.detach().clone())
        else:
            out.append(avg.mul_(momentum).add_(g, alpha=1.0 - momentum))
    return out


def _param_groups(named: list[tuple[str, nn.Parameter]], weight_decay: float) -> list[dict[str, Any]]:
    if weight_decay == 0:
        return [{"params": [p for _, p in named], "weight_decay": 0.0}]
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
    decay = [p for n, p in named if not any(k in n for k in no_decay)]
    rest = [p for n, p in named if any(k in n for k in no_decay)]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


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


def _best_name(epoch: int) -> str:
    return f"best-epoch{epoch}.safetensors"


def _clear_checkpoints(ckpt_dir: Path, keep: str | None = None) -> None:
    for f in ckpt_dir.glob("best-epoch*.safetensors"):
        if f.name != keep:
            f.unlink(missing_ok=True)


def _rng_state(train_gen: torch.Generator, aux_gen: torch.Generator) -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "torch": torch.get_rng_state(),
        "train_gen": train_gen.get_state(),
        "aux_gen": aux_gen.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: Mapping[str, Any], train_gen: torch.Generator, aux_gen: torch.Generator) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    train_gen.set_state(state["train_gen"])
    aux_gen.set_state(state["aux_gen"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _diff(saved: Mapping[str, Any], now: Mapping[str, Any], defaults: Mapping[str, Any] | None = None
          ) -> list[str]:
    """Keys that differ. A setting newer than the checkpoint counts as unchanged at its default value,
    so upgrading the software does not strand runs in progress."""
    defaults = defaults or {}
    return sorted(k for k in set(saved) | set(now) if saved.get(k, defaults.get(k)) != now.get(k))


# ----------------------------------------------------------------------------------------------------
# The loop


def train(model: nn.Module, tokenizer: Any, train: Sequence[Any], aux: Sequence[Any], select: Sequence[Any],
          config: Any, ckpt_dir: str | Path | None = None,
          progress: Callable[[ProgressEvent], None] | None = None,
          should_cancel: Callable[[], bool] | None = None, resume: bool = False,
          monitors: Mapping[str, Sequence[Any]] | None = None,
          step_callback: Callable[[nn.Module, int, int], None] | None = None) -> TrainOutcome:
    """Train ``model`` (from `apply_defense`) in place; leaves the best epoch's weights loaded.

    ``train``/``aux``/``select``: objects with ``.text`` and ``.label`` (int). ``aux`` is the clean
    reference set for gradient alignment (required when the method uses GA). ``select`` picks the
    best epoch (empty: the last epoch). ``monitors``: name -> rows reported per epoch, never used for
    the choice. Raises `JobCancelled` when ``should_cancel()`` turns True (polled before every step);
    the last epoch checkpoint stays in ``ckpt_dir`` for ``resume=True``. ``step_callback(model, step,
    epoch)`` runs after every optimiser step (1-based step and epoch), e.g. the frequency analysis.
    """
    wall_start = time.perf_counter()
    emit = progress or (lambda event: None)
    cancelled = should_cancel or (lambda: False)
    monitors = dict(monitors or {})
    if not train:
        raise ConfigError("no training rows")
    use_ga = bool(config.parts["ga"])
    if use_ga and not aux:
        raise ConfigError(f"method {config.method!r} uses gradient alignment and needs clean aux rows")

    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    model.to(device)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ConfigError("the model has no trainable parameter")
    params = [p for _, p in named]
    keys = state_keys(model)

    limit = effective_max_length(model, tokenizer, config.max_length, reserved=reserved_positions(model))
    inputs = model_input_names(model)
    pad_id = pad_id_of(tokenizer)
    side = getattr(tokenizer, "padding_side", "right")
    train_rows = encode_texts(tokenizer, [e.text for e in train], limit, keep=inputs)
    train_labels = torch.tensor([int(e.label) for e in train], dtype=torch.long)
    aux_rows = encode_texts(tokenizer, [e.text for e in aux], limit, keep=inputs) if use_ga else []
    aux_labels = torch.tensor([int(e.label) for e in aux], dtype=torch.long) if use_ga else None
    num_labels = int(unwrap(model).config.num_labels)
    for name, rows in (("train", train), ("aux", aux), ("select", select), *monitors.items()):
        bad = next((r for r in rows if not 0 <= int(r.label) < num_labels), None)
        if bad is not None:
            raise ConfigError(f"{name} row has label {bad.label}, outside 0..{num_labels - 1}")

    n = len(train_rows)
    bs = int(config.batch_size)
    steps_per_epoch = math.ceil(n / bs)
    epochs = int(config.epochs)
    total_steps = steps_per_epoch * epochs  # the LR schedule always spans every configured epoch
    # `fixed_epoch` (set by canary calibration) ships that epoch: stop after it, on the full run's
    # schedule, so its weights equal the calibration run's at that epoch (same seed and data size).
    fixed = getattr(config, "fixed_epoch", None)
    if fixed is not None and not 1 <= int(fixed) <= epochs:
        raise ConfigError(f"fixed_epoch {fixed} is outside 1..epochs ({epochs})")
    run_epochs = epochs if fixed is None else int(fixed)
    run_steps = steps_per_epoch * run_epochs
    aux_bs = min(int(config.aux_batch_size), len(aux_rows)) if use_ga else 0

    from transformers import get_linear_schedule_with_warmup

    optimizer = torch.optim.AdamW(_param_groups(named, float(config.weight_decay)), lr=float(config.lr),
                                  weight_decay=float(config.weight_decay))
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps),
                                                total_steps)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None

    # Seeds: dropout (global torch RNG), train order and aux draws (own generators, checkpointed).
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    train_gen = torch.Generator().manual_seed(config.seed)
    aux_gen = torch.Generator().manual_seed(config.seed + 1)

    fingerprint = {
        "config": {k: v for k, v in config.model_dump().items()
                   if k not in RUNTIME_FIELDS and k not in CANARY_FIELDS},
        "data": {"train": fingerprint_rows(train), "aux": fingerprint_rows(aux) if use_ga else None,
                 "select": fingerprint_rows(select)},
        "state_keys": hashlib.sha256("\n".join(keys).encode()).hexdigest(),
    }
    history: list[dict[str, Any]] = []
    best_epoch = 0
    best_score = -math.inf
    best_state: dict[str, torch.Tensor] | None = None
    start_epoch = 0
    ref_momentum = float(getattr(config, "ga_ref_momentum", 0.0)) if use_ga else 0.0
    ref_average: list[torch.Tensor | None] | None = None  # moving average of g_c (ga_ref_momentum > 0)
    folder = Path(ckpt_dir) if ckpt_dir is not None and config.checkpoint_every_epoch else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        last = folder / LAST
        if resume and last.exists():
            ck = load_checkpoint(last)
            if ck.get("format") != CKPT_FORMAT:
                raise ConfigError(f"{last}: unknown checkpoint format")
            defaults = {k: f.default for k, f in type(config).model_fields.items()}
            changed = _diff(ck["fingerprint"]["config"], fingerprint["config"], defaults)
            if changed:
                raise ConfigError(f"cannot resume from {last}: settings changed since it was written "
                                  f"({', '.join(changed)}); start afresh (resume=False) or restore them")
            for part in ("data", "state_keys"):
                if ck["fingerprint"][part] != fingerprint[part]:
                    raise ConfigError(f"cannot resume from {last}: the {part.replace('_', ' ')} differ "
                                      f"from the interrupted run")
            load_snapshot(model, ck["model"])
            optimizer.load_state_dict(ck["optimizer"])
            scheduler.load_state_dict(ck["scheduler"])
            if scaler is not None and ck.get("scaler"):
                scaler.load_state_dict(ck["scaler"])
            _restore_rng(ck["rng"], train_gen, aux_gen)
            history = list(ck["history"])
            best_epoch, best_score = int(ck["best_epoch"]), float(ck["best_score"])
            start_epoch = int(ck["epoch"])
            if ck.get("ref_average") is not None:
                ref_average = [None if g is None else g.to(device) for g in ck["ref_average"]]
            if ck.get("best_file"):
                best_state = load_checkpoint(folder / ck["best_file"])["model"]
        elif not resume:
            last.unlink(missing_ok=True)
            _clear_checkpoints(folder)

    step_seconds_sum = 0.0
    steps_timed = 0
    eval_seconds_last = 0.0
    global_step = start_epoch * steps_per_epoch
    for epoch in range(start_epoch, run_epochs):
        epoch_start = time.perf_counter()
        model.train()
        order = torch.randperm(n, generator=train_gen)
        loss_sum = 0.0
        counts = {"aligned": 0, "mixed": 0, "raw": 0}
        ref_loss_sum = 0.0
        align_seconds = 0.0
        raw_tensors = 0  # tensors whose non-zero raw gradient an aligned/mixed step kept (no clean gradient)
        dropped_tensors = 0  # ga_no_direction=skip: such gradients dropped instead
        idle_steps = 0  # steps whose gradients alignment zeroed: only AdamW's momentum moves weights
        ref_seconds = 0.0
        steps_seconds = 0.0
        mu_now = mu_for_epoch(config, epoch) if use_ga else 0.0
        for b in range(steps_per_epoch):
            if cancelled():
                raise JobCancelled(f"cancelled during epoch {epoch + 1}, before step {global_step + 1}")
            t_step = time.perf_counter()
            idx = order[b * bs:(b + 1) * bs].tolist()
            batch = {k: v.to(device) for k, v in collate([train_rows[i] for i in idx], pad_id, side).items()}
            labels = train_labels[idx].to(device)
            with autocast(device, precision):
                logits = model(**batch).logits
            loss = F.cross_entropy(logits.float(), labels)
            (scaler.scale(loss) if scaler is not None else loss).backward()
            if scaler is not None:
                scaler.unscale_(optimizer)

            if use_ga:
                t_ref = time.perf_counter()
                aux_idx = torch.randperm(len(aux_rows), generator=aux_gen)[:aux_bs].tolist()
                ref_batch = {k: v.to(device)
                             for k, v in collate([aux_rows[i] for i in aux_idx], pad_id, side).items()}
                assert aux_labels is not None
                with autocast(device, precision):
                    ref_logits = model(**ref_batch).logits
                ref_loss = F.cross_entropy(ref_logits.float(), aux_labels[aux_idx].to(device))
                scale = scaler.get_scale() if scaler is not None else 1.0
                clean = list(torch.autograd.grad(ref_loss * scale, params, allow_unused=True))
                if scale != 1.0:
                    clean = [None if g is None else g / scale for g in clean]
                ref_value = float(ref_loss.detach())
                ref_seconds += time.perf_counter() - t_ref
                present = [g for g in clean if g is not None]
                finite = bool(present) and bool(torch.stack(torch._foreach_norm(present)).isfinite().all())
                if finite and ref_momentum > 0:
                    ref_average = moving_average(ref_average, clean, ref_momentum)
                    clean = list(ref_average)
                if finite:
                    stats = apply_alignment(params, clean, ref_value, config, epoch, b / steps_per_epoch)
                    counts[stats.mode] += 1
                    align_seconds += stats.seconds
                    if stats.mode != "raw":
                        raw_tensors += stats.tensors_leaked
                        dropped_tensors += stats.tensors_dropped
                        idle_steps += int(stats.idle)
                    if stats.mode == "mixed":
                        mu_now = stats.mu
                else:
                    counts["raw"] += 1  # fp16 overflow in the clean pass: keep g, the scaler adjusts
                ref_loss_sum += ref_value

            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, float(config.grad_clip))
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

            loss_value = float(loss.detach())
            loss_sum += loss_value
            global_step += 1
            took = time.perf_counter() - t_step
            steps_seconds += took
            step_seconds_sum += took
            steps_timed += 1
            remaining = run_steps - global_step
            eta = (step_seconds_sum / steps_timed) * remaining + eval_seconds_last * (run_epochs - epoch)
            emit(ProgressEvent(kind="step", phase="training", epoch=epoch + 1, step=global_step,
                               total_steps=run_steps, loss=loss_value, eta_seconds=eta))
            if step_callback is not None:
                step_callback(model, global_step, epoch + 1)

        # ---- epoch end: selection accuracy and monitors (eval mode, no dropout, no RNG use)
        t_eval = time.perf_counter()
        eval_kwargs = {"batch_size": int(config.eval_batch_size), "max_length": int(config.max_length),
                       "precision": precision}
        select_acc = accuracy_on(model, tokenizer, select, **eval_kwargs)
        monitor_acc = {name: accuracy_on(model, tokenizer, rows, **eval_kwargs)
                       for name, rows in monitors.items()}
        eval_seconds_last = time.perf_counter() - t_eval
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / steps_per_epoch,
            "select_accuracy": select_acc,
            "monitors": monitor_acc,
            "lr": float(scheduler.get_last_lr()[0]),
            "steps": steps_per_epoch,
            "seconds": time.perf_counter() - epoch_start,
            "eval_seconds": eval_seconds_last,
        }
        if use_ga:
            record["ga"] = {
                "aligned_share": counts["aligned"] / steps_per_epoch,  # gate open: pure alignment
                "mixed_share": counts["mixed"] / steps_per_epoch,
                "raw_share": counts["raw"] / steps_per_epoch,
                # a leak check: trainable tensors that kept the poisoned gradient in an aligned step
                "raw_tensors_per_step": raw_tensors / steps_per_epoch,
                "dropped_tensors_per_step": dropped_tensors / steps_per_epoch,
                "idle_share": idle_steps / steps_per_epoch,  # steps that changed no gradient-carrying tensor
                "mu": mu_now,
                "ref_loss_mean": ref_loss_sum / steps_per_epoch,
                "align_seconds": align_seconds,  # alignment maths only
                "ref_pass_seconds": ref_seconds,  # the clean forward/backward
                "step_seconds": steps_seconds,
                "align_share_of_step": align_seconds / steps_seconds if steps_seconds > 0 else 0.0,
            }
        score = select_acc if select_acc is not None else -math.inf
        improved = score > best_score or best_epoch == 0 or (select_acc is None)
        if fixed is not None:
            improved = epoch + 1 == fixed
        if improved:
            best_score = score if select_acc is not None else best_score
            best_epoch = epoch + 1
            best_state = snapshot(model, keys)
        record["best_epoch"] = best_epoch
        history.append(record)

        if folder is not None:
            # None until the fixed epoch is reached (fixed_epoch: earlier epochs are never "best")
            best_file = _best_name(best_epoch) if best_epoch else None
            if improved:
                save_checkpoint({"epoch": best_epoch, "model": best_state}, folder / _best_name(best_epoch))
            save_checkpoint({
                "format": CKPT_FORMAT,
                "epoch": epoch + 1,  # epochs completed
                "fingerprint": fingerprint,
                "model": snapshot(model, keys),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "rng": _rng_state(train_gen, aux_gen),
                "ref_average": None if ref_average is None else [
                    None if g is None else g.detach().to("cpu", copy=True) for g in ref_average],
                "history": history,
                "best_epoch": best_epoch,
                "best_score": best_score,
                "best_file": best_file,
            }, folder / LAST)
            _clear_checkpoints(folder, keep=best_file)
        emit(ProgressEvent(kind="epoch", phase="training", epoch=epoch + 1, step=global_step,
                           total_steps=run_steps, loss=record["train_loss"], metrics=record))

    if best_state is not None:
        load_snapshot(model, best_state)
    return TrainOutcome(best_epoch=best_epoch, per_epoch=history,
                        wall_seconds=time.perf_counter() - wall_start, resumed_from_epoch=start_epoch,
                        trainable_params=sum(p.numel() for p in params), precision=precision,
                        device=str(device))
