"""What a caller gives the engine and gets back: the inputs, the progress events, the result.

Plain data, imported by the engine's stages and by its callers (CLI, worker, API) alike; `core.engine`
re-exports it beside `run_job`.
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
    # an epoch a resumed run's checkpoint already holds, reported again: a process killed between saving
    # the checkpoint and reporting the epoch would otherwise never report it
    replayed: bool = False


@dataclass(frozen=True)
class JobResult:
    out_dir: Path
    metrics: dict[str, Any]  # exactly what metrics.json holds
    model_dir: Path | None  # merged model (None for methods that cannot be merged: adapter, prefix)
    adapter_dir: Path | None


ProgressCallback = Callable[[ProgressEvent], None]
CancelCheck = Callable[[], bool]
