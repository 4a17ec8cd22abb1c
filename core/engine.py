"""The engine's one entry point, shared by the CLI and the worker.

    result = run_job(inputs, config, out_dir, progress=callback, should_cancel=check)

* `progress(event)` is called for every training step, epoch end and phase change. It must be quick;
  the worker turns events into database rows.
* `should_cancel()` is polled once per training step; when it returns True the engine raises
  `JobCancelled` after the current step, leaving the last epoch checkpoint in `out_dir/checkpoints`.
* Calling `run_job` again on the same `out_dir` with `resume=True` continues from the last completed
  epoch checkpoint (after a kill or a crash) and gives the same result as an uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Phase = Literal["validating", "screening", "loading", "training", "evaluating", "exporting", "done"]


@dataclass(frozen=True)
class JobInputs:
    """Paths to the user's files. `probe_files` maps a probe name to a triggered test file."""

    train: Path
    aux: Path
    eval: Path | None = None
    select: Path | None = None  # clean held-back rows for epoch choice; default: a slice of aux
    probe_files: dict[str, Path] = field(default_factory=dict)
    probes: tuple[str, ...] = ()  # built-in probes: "badnets", "addsent", 'insert:"text"'
    text_column: str = "text"
    label_column: str = "label"
    names: dict[str, str] = field(default_factory=dict)  # role -> the file's name as its owner gave it

    def name(self, role: str, path: Path) -> str:
        return self.names.get(role, path.name)


@dataclass(frozen=True)
class ProgressEvent:
    kind: Literal["phase", "step", "epoch", "log"]
    phase: Phase = "training"
    epoch: int | None = None  # 1-based
    step: int | None = None  # global optimiser step, 1-based
    total_steps: int | None = None
    loss: float | None = None
    eta_seconds: float | None = None
    message: str | None = None
    metrics: dict[str, Any] | None = None  # epoch events: selection accuracy, gate share, mu


@dataclass(frozen=True)
class JobResult:
    out_dir: Path
    metrics: dict[str, Any]  # exactly what metrics.json holds
    model_dir: Path | None  # merged model (None for methods that cannot be merged: adapter, prefix)
    adapter_dir: Path | None


ProgressCallback = Callable[[ProgressEvent], None]
CancelCheck = Callable[[], bool]


def run_job(inputs: JobInputs, config: Any, out_dir: Path, progress: ProgressCallback | None = None,
            should_cancel: CancelCheck | None = None, resume: bool = True,
            explicit_keys: set[str] | None = None) -> JobResult:
    """Validate, train with the configured defense, evaluate, export. See module docstring.

    `explicit_keys` names the settings the user chose; family presets (Llama under `reference`) never
    override those.
    """
    from core.pipeline import run_pipeline  # heavy imports (torch) only when a job runs

    return run_pipeline(inputs, config, Path(out_dir), progress, should_cancel, resume, explicit_keys)
