"""One job, start to end: the stages of `core/stages/` in order.

validate -> screen -> build the defended model -> train (the loop chooses the epoch) -> export -> evaluate
-> report. The reported metrics are computed on the exported merged model, re-loaded from disk with plain
transformers, so anybody holding the artifacts can recompute them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from core.config import TrainConfig
from core.interface import CancelCheck, JobInputs, JobResult, ProgressCallback, ProgressEvent
from core.stages.evaluate import evaluate_classifier, score_export
from core.stages.export import export_model
from core.stages.report import versions, write_json_atomic, write_report
from core.stages.screen import run_screen
from core.stages.train import build_model, epoch_monitors, family_adjusted, train_model
from core.stages.validate import file_sha256, validate_inputs

__all__ = [  # the names callers import from here; each lives in its stage's module
    "epoch_monitors", "evaluate_classifier", "family_adjusted", "file_sha256", "run_pipeline", "run_screen",
    "validate_inputs", "versions", "write_json_atomic",
]


def run_pipeline(inputs: JobInputs, config: TrainConfig, out_dir: Path, progress: ProgressCallback | None,
                 should_cancel: CancelCheck | None, resume: bool,
                 explicit_keys: set[str] | None = None) -> JobResult:
    emit = progress or (lambda event: None)
    started = time.time()
    if resume and (out_dir / "metrics.json").is_file():  # already finished: nothing to redo
        return _finished(out_dir)

    emit(ProgressEvent(kind="phase", phase="validating", message="validating input files"))
    data = validate_inputs(inputs, config)
    emit(ProgressEvent(kind="log", phase="validating", message="inputs valid", metrics=data.summary()))
    out_dir.mkdir(parents=True, exist_ok=True)  # only now: bad input leaves no empty folder behind

    screen = run_screen(data, config, out_dir, emit, resume)
    built = build_model(data, config, out_dir, emit, should_cancel, resume, explicit_keys or set())
    trained = train_model(built, data, out_dir, emit, should_cancel, resume)
    exported = export_model(built, out_dir, emit)
    scored = score_export(built, exported, data, emit)
    metrics = write_report(data, screen, built, trained, scored, started, out_dir, emit)
    return JobResult(out_dir, metrics, scored.model_dir, scored.adapter_dir)


def _finished(out_dir: Path) -> JobResult:
    """The result of a job that already wrote metrics.json."""
    metrics = json.loads((out_dir / "metrics.json").read_text())
    model_dir = out_dir / "model" if (out_dir / "model").is_dir() else None
    adapter_dir = out_dir / "adapter" if (out_dir / "adapter").is_dir() else None
    return JobResult(out_dir, metrics, model_dir, adapter_dir)
