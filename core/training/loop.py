"""The training loop: AdamW + linear schedule, optional gradient alignment, per-epoch selection,
atomic per-epoch checkpoints and exact resume.

Per step (docs/reference-implementation.md §3.2): forward the training batch (train mode), CE,
backward (p.grad = g); with GA, one fresh random minibatch of ``aux_batch_size`` clean aux rows
(seeded generator), CE, and
``autograd.grad`` over the trainable parameters (g_c; ``.grad`` untouched), then the gate and the
alignment (`core.defenses.alignment`); then ``clip_grad_norm_``, ``optimizer.step``,
``scheduler.step``, ``zero_grad``.

After each epoch: accuracy on ``select`` (clean held-back rows) chooses the best epoch (highest, first
on ties); ``monitors`` (e.g. probes) are reported but never used for the choice. The best epoch's
trainable state is loaded at the end. ``config.fixed_epoch`` (canary calibration) overrides the choice:
that epoch is the best, and the run stops after it on the full run's LR schedule.

Checkpoints (``ckpt_dir``, `core.training.checkpoints`): ``last.safetensors`` after every epoch holds the
trainable tensors (plus the frozen random head and MSLR tensors, so a rebuilt model matches exactly),
optimizer, scheduler, GradScaler, every RNG state (python, torch CPU/CUDA, the train and aux generators),
the per-epoch history and the best epoch; ``best-epochN.safetensors`` holds the best state. Both are
safetensors files (JSON metadata for what is not a tensor: nothing is unpickled), written to a temporary
file and moved into place. ``resume=True`` continues after the last completed epoch and, on CPU,
gives bit-identical results to an uninterrupted run with the same seed.

Per-epoch records are `core.training.records.EpochRecord`s; their JSON is ``TrainOutcome.per_epoch``.
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
from core.training.batching import collate, encode_texts, model_input_names, pad_id_of
from core.training.checkpoints import (  # noqa: F401 - LAST, snapshot, state_keys: this module's API too
    LAST,
    Checkpoints,
    Optimisation,
    TrainState,
    load_snapshot,
    snapshot,
    state_keys,
)
from core.training.checkpoints import config_diff as _diff  # noqa: F401 - the name tests use
from core.training.device import autocast, resolve_device, resolve_precision
from core.training.predict import accuracy_on, reserved_positions
from core.training.records import AlignmentTally, EpochRecord

# Settings a resume may differ in: they do not change the training trajectory (runtime choices, data knobs
# the data fingerprints already cover; the frequency analysis forks the RNG). Marked `runtime` on the field.
RUNTIME_FIELDS = fields_with("runtime")


@dataclass
class TrainOutcome:
    best_epoch: int  # 1-based
    per_epoch: list[dict[str, Any]]  # `EpochRecord.as_json()` per epoch
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


@dataclass
class _Data:
    """The encoded rows the steps draw from."""

    train_rows: list[Any]
    train_labels: torch.Tensor
    aux_rows: list[Any]  # empty without GA
    aux_labels: torch.Tensor | None
    pad_id: int
    side: str


@dataclass
class _Plan:
    """Sizes: rows, batches, steps and epochs."""

    n: int
    bs: int
    steps_per_epoch: int
    total_steps: int  # the LR schedule always spans every configured epoch
    fixed: int | None  # fixed_epoch: ship that epoch and stop after it
    run_epochs: int
    run_steps: int
    aux_bs: int


@dataclass
class _Clock:
    """Step counter and timings for the ETA."""

    global_step: int = 0
    step_seconds_sum: float = 0.0
    steps_timed: int = 0
    eval_seconds_last: float = 0.0


@dataclass
class _Run:
    """One `train` call: the model, its settings and what the steps share."""

    model: nn.Module
    tokenizer: Any
    config: Any
    device: torch.device
    precision: str
    params: list[nn.Parameter]
    keys: list[str]
    data: _Data
    plan: _Plan
    opt: Optimisation
    use_ga: bool
    select: Sequence[Any]
    monitors: dict[str, Sequence[Any]]
    emit: Callable[[ProgressEvent], None] = lambda event: None  # noqa: E731
    cancelled: Callable[[], bool] = lambda: False  # noqa: E731
    step_callback: Callable[[nn.Module, int, int], None] | None = None
    clock: _Clock = field(default_factory=_Clock)

    @property
    def ref_momentum(self) -> float:
        return float(getattr(self.config, "ga_ref_momentum", 0.0)) if self.use_ga else 0.0


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
    reference set for gradient alignment (required when the method uses GA), unless
    ``config.ga_reference`` is ``kept``: then the screened ``train`` rows are the reference. ``select`` picks the
    best epoch (empty: the last epoch). ``monitors``: name -> rows reported per epoch, never used for
    the choice. Raises `JobCancelled` when ``should_cancel()`` turns True (polled before every step);
    the last epoch checkpoint stays in ``ckpt_dir`` for ``resume=True``. ``step_callback(model, step,
    epoch)`` runs after every optimiser step (1-based step and epoch), e.g. the frequency analysis.
    """
    wall_start = time.perf_counter()
    monitors = dict(monitors or {})
    if not train:
        raise ConfigError("no training rows")
    use_ga = bool(config.parts["ga"])
    if getattr(config, "ga_reference", "aux") == "kept":
        aux = train
    if use_ga and not aux:
        raise ConfigError(f"method {config.method!r} uses gradient alignment and needs clean aux rows")
    run = _setup(model, tokenizer, train, aux, select, monitors, config, use_ga)
    run.emit = progress or run.emit
    run.cancelled = should_cancel or run.cancelled
    run.step_callback = step_callback
    fingerprint = _fingerprint(config, train, aux, select, run.keys, use_ga)
    ckpts = (Checkpoints(Path(ckpt_dir), fingerprint)
             if ckpt_dir is not None and config.checkpoint_every_epoch else None)
    state = ckpts.open(resume, model, config, run.opt, run.device) if ckpts is not None else TrainState()
    run.clock.global_step = state.start_epoch * run.plan.steps_per_epoch
    for row in state.history:  # empty unless resumed
        run.emit(ProgressEvent(kind="epoch", phase="training", epoch=row["epoch"], metrics=row, replayed=True))
    for epoch in range(state.start_epoch, run.plan.run_epochs):
        _run_epoch(run, state, epoch, ckpts)
    if state.best_state is not None:
        load_snapshot(model, state.best_state)
    return TrainOutcome(best_epoch=state.best_epoch, per_epoch=state.history,
                        wall_seconds=time.perf_counter() - wall_start, resumed_from_epoch=state.start_epoch,
                        trainable_params=sum(p.numel() for p in run.params), precision=run.precision,
                        device=str(run.device))


def _setup(model: nn.Module, tokenizer: Any, train: Sequence[Any], aux: Sequence[Any], select: Sequence[Any],
           monitors: dict[str, Sequence[Any]], config: Any, use_ga: bool) -> _Run:
    """Device, trainable parameters, encoded rows, sizes, optimiser and seeds (in that order)."""
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    model.to(device)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ConfigError("the model has no trainable parameter")
    keys = state_keys(model)
    data = _encode(model, tokenizer, train, aux, use_ga, config)
    num_labels = int(unwrap(model).config.num_labels)
    for name, rows in (("train", train), ("aux", aux), ("select", select), *monitors.items()):
        bad = next((r for r in rows if not 0 <= int(r.label) < num_labels), None)
        if bad is not None:
            raise ConfigError(f"{name} row has label {bad.label}, outside 0..{num_labels - 1}")
    plan = _plan(config, len(data.train_rows), len(data.aux_rows), use_ga)
    opt = _optimisation(named, config, plan.total_steps, precision)
    return _Run(model=model, tokenizer=tokenizer, config=config, device=device, precision=precision,
                params=[p for _, p in named], keys=keys, data=data, plan=plan, opt=opt, use_ga=use_ga,
                select=select, monitors=monitors)


def _encode(model: nn.Module, tokenizer: Any, train: Sequence[Any], aux: Sequence[Any], use_ga: bool,
            config: Any) -> _Data:
    limit = effective_max_length(model, tokenizer, config.max_length, reserved=reserved_positions(model))
    inputs = model_input_names(model)

    def encoded(rows: Sequence[Any]) -> tuple[list[Any], torch.Tensor]:
        return (encode_texts(tokenizer, [e.text for e in rows], limit, keep=inputs),
                torch.tensor([int(e.label) for e in rows], dtype=torch.long))

    train_rows, train_labels = encoded(train)
    # ga_reference=kept: the reference is the training rows themselves, already encoded
    aux_rows, aux_labels = ((train_rows, train_labels) if aux is train else encoded(aux)) if use_ga else ([], None)
    return _Data(train_rows=train_rows, train_labels=train_labels, aux_rows=aux_rows, aux_labels=aux_labels,
                 pad_id=pad_id_of(tokenizer), side=getattr(tokenizer, "padding_side", "right"))


def _plan(config: Any, n: int, aux_rows: int, use_ga: bool) -> _Plan:
    bs = int(config.batch_size)
    steps_per_epoch = math.ceil(n / bs)
    epochs = int(config.epochs)
    # `fixed_epoch` (set by canary calibration) ships that epoch: stop after it, on the full run's
    # schedule, so its weights equal the calibration run's at that epoch (same seed and data size).
    fixed = getattr(config, "fixed_epoch", None)
    if fixed is not None and not 1 <= int(fixed) <= epochs:
        raise ConfigError(f"fixed_epoch {fixed} is outside 1..epochs ({epochs})")
    run_epochs = epochs if fixed is None else int(fixed)
    return _Plan(n=n, bs=bs, steps_per_epoch=steps_per_epoch, total_steps=steps_per_epoch * epochs,
                 fixed=None if fixed is None else int(fixed), run_epochs=run_epochs,
                 run_steps=steps_per_epoch * run_epochs,
                 aux_bs=min(int(config.aux_batch_size), aux_rows) if use_ga else 0)


def _optimisation(named: list[tuple[str, nn.Parameter]], config: Any, total_steps: int,
                  precision: str) -> Optimisation:
    from transformers import get_linear_schedule_with_warmup

    optimizer = torch.optim.AdamW(_param_groups(named, float(config.weight_decay)), lr=float(config.lr),
                                  weight_decay=float(config.weight_decay))
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps),
                                                total_steps)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    # Seeds: dropout (global torch RNG), train order and aux draws (own generators, checkpointed).
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    return Optimisation(optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                        train_gen=torch.Generator().manual_seed(config.seed),
                        aux_gen=torch.Generator().manual_seed(config.seed + 1))


def _fingerprint(config: Any, train: Sequence[Any], aux: Sequence[Any], select: Sequence[Any],
                 keys: Sequence[str], use_ga: bool) -> dict[str, Any]:
    """What a resume must find unchanged: the settings that shape training, the data, the tensors."""
    return {
        "config": {k: v for k, v in config.model_dump().items()
                   if k not in RUNTIME_FIELDS and k not in CANARY_FIELDS},
        "data": {"train": fingerprint_rows(train), "aux": fingerprint_rows(aux) if use_ga else None,
                 "select": fingerprint_rows(select)},
        "state_keys": hashlib.sha256("\n".join(keys).encode()).hexdigest(),
    }


def _run_epoch(run: _Run, state: TrainState, epoch: int, ckpts: Checkpoints | None) -> None:
    """Train one epoch (0-based ``epoch``), evaluate, choose, checkpoint, report."""
    epoch_start = time.perf_counter()
    loss_sum, tally, steps_seconds = _epoch_steps(run, state, epoch)
    select_acc, monitor_acc = _evaluate(run)
    steps = run.plan.steps_per_epoch
    record = EpochRecord(
        epoch=epoch + 1, train_loss=loss_sum / steps, select_accuracy=select_acc, monitors=monitor_acc,
        lr=float(run.opt.scheduler.get_last_lr()[0]), steps=steps, seconds=time.perf_counter() - epoch_start,
        eval_seconds=run.clock.eval_seconds_last, alignment=tally if run.use_ga else None,
        step_seconds=steps_seconds)
    improved = _choose(run, state, epoch, select_acc)
    record.best_epoch = state.best_epoch
    state.history.append(record.as_json())
    if ckpts is not None:
        ckpts.save(epoch + 1, improved, state, run.model, run.keys, run.opt)
    run.emit(ProgressEvent(kind="epoch", phase="training", epoch=epoch + 1, step=run.clock.global_step,
                           total_steps=run.plan.run_steps, loss=record.train_loss, metrics=state.history[-1]))


def _choose(run: _Run, state: TrainState, epoch: int, select_acc: float | None) -> bool:
    """Best epoch so far: highest selection accuracy, first on ties (or the fixed epoch); snapshots it."""
    score = select_acc if select_acc is not None else -math.inf
    improved = score > state.best_score or state.best_epoch == 0 or (select_acc is None)
    if run.plan.fixed is not None:
        improved = epoch + 1 == run.plan.fixed
    if improved:
        state.best_score = score if select_acc is not None else state.best_score
        state.best_epoch = epoch + 1
        state.best_state = snapshot(run.model, run.keys)
    return improved


def _evaluate(run: _Run) -> tuple[float | None, dict[str, float | None]]:
    """Selection accuracy and monitors (eval mode, no dropout, no RNG use)."""
    t_eval = time.perf_counter()
    eval_kwargs = {"batch_size": int(run.config.eval_batch_size), "max_length": int(run.config.max_length),
                   "precision": run.precision}
    select_acc = accuracy_on(run.model, run.tokenizer, run.select, **eval_kwargs)
    monitor_acc = {name: accuracy_on(run.model, run.tokenizer, rows, **eval_kwargs)
                   for name, rows in run.monitors.items()}
    run.clock.eval_seconds_last = time.perf_counter() - t_eval
    return select_acc, monitor_acc


def _epoch_steps(run: _Run, state: TrainState, epoch: int) -> tuple[float, AlignmentTally, float]:
    """Every optimiser step of one epoch: (summed loss, alignment tally, seconds in steps)."""
    run.model.train()
    order = torch.randperm(run.plan.n, generator=run.opt.train_gen)
    loss_sum = 0.0
    steps_seconds = 0.0
    tally = AlignmentTally(mu=mu_for_epoch(run.config, epoch) if run.use_ga else 0.0)
    for b in range(run.plan.steps_per_epoch):
        if run.cancelled():
            raise JobCancelled(f"cancelled during epoch {epoch + 1}, before step {run.clock.global_step + 1}")
        t_step = time.perf_counter()
        loss_value = _step(run, state, tally, order, epoch, b)
        loss_sum += loss_value
        run.clock.global_step += 1
        took = time.perf_counter() - t_step
        steps_seconds += took
        _report_step(run, epoch, took, loss_value)
    return loss_sum, tally, steps_seconds


def _report_step(run: _Run, epoch: int, took: float, loss_value: float) -> None:
    clock, plan = run.clock, run.plan
    clock.step_seconds_sum += took
    clock.steps_timed += 1
    remaining = plan.run_steps - clock.global_step
    eta = (clock.step_seconds_sum / clock.steps_timed) * remaining + clock.eval_seconds_last * (
        plan.run_epochs - epoch)
    run.emit(ProgressEvent(kind="step", phase="training", epoch=epoch + 1, step=clock.global_step,
                           total_steps=plan.run_steps, loss=loss_value, eta_seconds=eta))
    if run.step_callback is not None:
        run.step_callback(run.model, clock.global_step, epoch + 1)


def _step(run: _Run, state: TrainState, tally: AlignmentTally, order: torch.Tensor, epoch: int, b: int) -> float:
    """Batch ``b``: forward, CE, backward, (GA) alignment, clip, optimiser and schedule step. The loss."""
    data, opt = run.data, run.opt
    idx = order[b * run.plan.bs:(b + 1) * run.plan.bs].tolist()
    batch = {k: v.to(run.device) for k, v in collate([data.train_rows[i] for i in idx], data.pad_id,
                                                      data.side).items()}
    labels = data.train_labels[idx].to(run.device)
    with autocast(run.device, run.precision):
        logits = run.model(**batch).logits
    loss = F.cross_entropy(logits.float(), labels)
    (opt.scaler.scale(loss) if opt.scaler is not None else loss).backward()
    if opt.scaler is not None:
        opt.scaler.unscale_(opt.optimizer)
    if run.use_ga:
        _align(run, state, tally, epoch, b)
    if run.config.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.params, float(run.config.grad_clip))
    if opt.scaler is not None:
        opt.scaler.step(opt.optimizer)
        opt.scaler.update()
    else:
        opt.optimizer.step()
    opt.scheduler.step()
    opt.optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def _clean_gradient(run: _Run) -> tuple[list[torch.Tensor | None], float]:
    """g_c: the gradient of one fresh random aux minibatch's CE (``.grad`` untouched), and its loss."""
    data, scaler = run.data, run.opt.scaler
    aux_idx = torch.randperm(len(data.aux_rows), generator=run.opt.aux_gen)[:run.plan.aux_bs].tolist()
    ref_batch = {k: v.to(run.device)
                 for k, v in collate([data.aux_rows[i] for i in aux_idx], data.pad_id, data.side).items()}
    assert data.aux_labels is not None
    with autocast(run.device, run.precision):
        ref_logits = run.model(**ref_batch).logits
    ref_loss = F.cross_entropy(ref_logits.float(), data.aux_labels[aux_idx].to(run.device))
    scale = scaler.get_scale() if scaler is not None else 1.0
    clean = list(torch.autograd.grad(ref_loss * scale, run.params, allow_unused=True))
    if scale != 1.0:
        clean = [None if g is None else g / scale for g in clean]
    return clean, float(ref_loss.detach())


def _align(run: _Run, state: TrainState, tally: AlignmentTally, epoch: int, b: int) -> None:
    """Gradient alignment of this step's ``.grad`` against the clean gradient (`apply_alignment`)."""
    t_ref = time.perf_counter()
    clean, ref_value = _clean_gradient(run)
    tally.ref_seconds += time.perf_counter() - t_ref
    present = [g for g in clean if g is not None]
    finite = bool(present) and bool(torch.stack(torch._foreach_norm(present)).isfinite().all())
    if finite and run.ref_momentum > 0:
        state.ref_average = moving_average(state.ref_average, clean, run.ref_momentum)
        clean = list(state.ref_average)
    if finite:
        stats = apply_alignment(run.params, clean, ref_value, run.config, epoch, b / run.plan.steps_per_epoch)
        tally.count(stats.mode)
        tally.align_seconds += stats.seconds
        if stats.mode != "raw":
            tally.raw_tensors += stats.tensors_leaked
            tally.dropped_tensors += stats.tensors_dropped
            tally.idle_steps += int(stats.idle)
        if stats.mode == "mixed":
            tally.mu = stats.mu
    else:
        tally.raw += 1  # fp16 overflow in the clean pass: keep g, the scaler adjusts
    tally.ref_loss_sum += ref_value
