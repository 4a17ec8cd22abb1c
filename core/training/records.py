"""What the training loop reports per epoch, typed. ``as_json()`` gives the dict that goes into metrics.json
(``per_epoch``), the checkpoint's history and the ``epoch`` progress event: same keys, same order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class AlignmentTally:
    """Gradient-alignment counters of one epoch, summed over its steps."""

    aligned: int = 0  # gate open: pure alignment
    mixed: int = 0
    raw: int = 0
    raw_tensors: int = 0  # tensors whose non-zero raw gradient an aligned/mixed step kept (no clean gradient)
    dropped_tensors: int = 0  # ga_no_direction=skip: such gradients dropped instead
    idle_steps: int = 0  # steps whose gradients alignment zeroed: only AdamW's momentum moves weights
    ref_loss_sum: float = 0.0
    align_seconds: float = 0.0
    ref_seconds: float = 0.0
    mu: float = 0.0  # mu of the epoch, or of its last mixed step

    def count(self, mode: str) -> None:
        setattr(self, mode, getattr(self, mode) + 1)

    def as_json(self, steps: int, step_seconds: float) -> dict[str, Any]:
        return {
            "aligned_share": self.aligned / steps,  # gate open: pure alignment
            "mixed_share": self.mixed / steps,
            "raw_share": self.raw / steps,
            # a leak check: trainable tensors that kept the poisoned gradient in an aligned step
            "raw_tensors_per_step": self.raw_tensors / steps,
            "dropped_tensors_per_step": self.dropped_tensors / steps,
            "idle_share": self.idle_steps / steps,  # steps that changed no gradient-carrying tensor
            "mu": self.mu,
            "ref_loss_mean": self.ref_loss_sum / steps,
            "align_seconds": self.align_seconds,  # alignment maths only
            "ref_pass_seconds": self.ref_seconds,  # the clean forward/backward
            "step_seconds": step_seconds,
            "align_share_of_step": self.align_seconds / step_seconds if step_seconds > 0 else 0.0,
        }


@dataclass
class EpochRecord:
    """One epoch: training loss, the selection accuracy, the monitors and (GA methods) the alignment."""

    epoch: int  # 1-based
    train_loss: float
    select_accuracy: float | None
    monitors: dict[str, float | None]
    lr: float
    steps: int
    seconds: float
    eval_seconds: float
    alignment: AlignmentTally | None = None
    step_seconds: float = 0.0  # the epoch's optimiser steps only (for the alignment's share)
    best_epoch: int = 0  # best so far, this epoch included

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "epoch": self.epoch,
            "train_loss": self.train_loss,
            "select_accuracy": self.select_accuracy,
            "monitors": self.monitors,
            "lr": self.lr,
            "steps": self.steps,
            "seconds": self.seconds,
            "eval_seconds": self.eval_seconds,
        }
        if self.alignment is not None:
            out["ga"] = self.alignment.as_json(self.steps, self.step_seconds)
        out["best_epoch"] = self.best_epoch
        return out
