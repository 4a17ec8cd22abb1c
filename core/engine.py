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

from pathlib import Path
from typing import Any

from core.interface import (  # noqa: F401 - re-exported: callers name the engine's types from here
    CancelCheck,
    JobInputs,
    JobResult,
    Phase,
    ProgressCallback,
    ProgressEvent,
)


def run_job(inputs: JobInputs, config: Any, out_dir: Path, progress: ProgressCallback | None = None,
            should_cancel: CancelCheck | None = None, resume: bool = True,
            explicit_keys: set[str] | None = None) -> JobResult:
    """Validate, train with the configured defense, evaluate, export. See module docstring.

    `explicit_keys` names the settings the user chose; family presets (Llama under `reference`) never
    override those.
    """
    from core.pipeline import run_pipeline  # heavy imports (torch) only when a job runs

    return run_pipeline(inputs, config, Path(out_dir), progress, should_cancel, resume, explicit_keys)
