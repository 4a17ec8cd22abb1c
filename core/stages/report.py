"""Stage 7, report: metrics.json, the model card and the last progress event.

`write_report` takes what the stages before it gave (the `PreparedData`, the screen summary, the
`DefendedModel`, `Trained` and `Scored`), the job's start time and the output folder; it writes
metrics.json atomically (`write_json_atomic`), the model card in `model/` when there is one, emits the
`done` phase and returns the metrics (`Metrics`, the dict metrics.json holds). `job_metrics` is the dict
before the optional analysis and canary keys; `versions` the library versions it records.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.interface import ProgressCallback, ProgressEvent
from core.prepared import PreparedData
from core.stages.evaluate import Scored
from core.stages.screen import ScreenSummary
from core.stages.train import DefendedModel, Trained

if TYPE_CHECKING:  # the loop imports torch
    from core.training.loop import TrainOutcome

Metrics = dict[str, Any]


def versions() -> dict[str, str]:
    import peft
    import torch
    import transformers

    import core

    return {"muscle": core.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "python": platform.python_version()}


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def write_report(data: PreparedData, screen: ScreenSummary, built: DefendedModel, trained: Trained,
                 scored: Scored, started: float, out_dir: Path, emit: ProgressCallback) -> Metrics:
    """Write out_dir/metrics.json and the model card; `started` is the job's start (time.time())."""
    from core.model_card import write_model_card

    outcome = trained.outcome
    metrics = job_metrics(scored, built, outcome, data, screen, time.time() - started)
    if trained.analysis_files:
        metrics["analysis_files"] = [str(p.relative_to(out_dir)) for p in trained.analysis_files]
    if built.canary:
        metrics.update({"canary": built.canary, "canary_asr": built.canary["canary_asr"]})
    write_json_atomic(out_dir / "metrics.json", metrics)
    if scored.model_dir is not None:
        write_model_card(scored.model_dir, metrics)
    emit(ProgressEvent(kind="phase", phase="done", message="finished",
                       metrics={"cacc": scored.cacc, "asr": scored.asr, "best_epoch": outcome.best_epoch}))
    return metrics


def job_metrics(scored: Scored, built: DefendedModel, outcome: TrainOutcome, data: PreparedData,
                screen: ScreenSummary, wall_seconds: float) -> Metrics:
    """metrics.json (before the optional analysis and canary keys)."""
    config = built.config
    return {
        "cacc": scored.cacc,
        "asr": scored.asr,
        "asr_floor": scored.floor,  # clean non-target eval rows predicted as the target: read ASR against it
        "best_epoch": outcome.best_epoch,
        "per_epoch": outcome.per_epoch,
        "method": config.method,
        "config": config.model_dump(mode="json"),
        "seed": config.seed,
        "versions": versions(),
        "data_sha256": data.sha256,
        "wall_seconds": round(wall_seconds, 2),
        "train_seconds": round(outcome.wall_seconds, 2),
        # what "auto" resolved to on this machine: figures from a GPU (bf16 autocast) and a CPU differ
        "device": outcome.device,
        "precision": outcome.precision,
        "resumed_from_epoch": outcome.resumed_from_epoch,
        "model_source": str(built.source) if config.model != "minilm" else "minilm (all-MiniLM-L6-v2, packaged)",
        "family": built.family,
        "cacc_source": data.sources["cacc"],
        "selection_source": data.sources["select"],
        "probe_sources": {k.split(":", 1)[1]: v for k, v in data.sources.items() if k.startswith("probe:")},
        "scored": scored.scored,
        "head_probe": built.head_fit,
        "selection_rows": len(data.select),
        "data": data.summary(),
        "screen": screen,
    }
