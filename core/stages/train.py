"""Stages 3 and 4, train and choose the epoch: build the defended model, then run the training loop.

`build_model` takes the `PreparedData`, the `TrainConfig` and the settings the user set explicitly; it loads
the backbone, applies the Llama settings under `reference` (`family_adjusted`), runs the optional canary
calibration and installs the defense, and returns a `DefendedModel` (model, tokenizer, the adjusted config,
family, source, canary report, head fit). `train_model` takes that `DefendedModel` and returns `Trained`:
the loop's `TrainOutcome` (`best_epoch` is the epoch the loop chose on the select rows; its weights are left
loaded in the model) and the frequency-analysis files, when that analysis ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.config import LLAMA_REFERENCE, TrainConfig
from core.data.dataset import Example
from core.interface import CancelCheck, ProgressCallback, ProgressEvent
from core.metrics import FLOOR_MONITOR
from core.prepared import PreparedData

if TYPE_CHECKING:  # the loop imports torch; loaded only when a job trains
    from core.training.loop import TrainOutcome


def family_adjusted(config: TrainConfig, family: str, explicit: set[str]) -> TrainConfig:
    """The authors ran Llama with other settings; apply them under `reference` unless set by the user."""
    if family != "llama" or config.profile != "reference":
        return config
    updates = {k: v for k, v in LLAMA_REFERENCE.items() if k not in explicit}
    return config.model_copy(update=updates)


@dataclass(frozen=True)
class DefendedModel:
    """The defended model a run trains, and how it came to be."""

    model: Any
    tokenizer: Any
    config: TrainConfig  # family-adjusted, and the canary's choice when calibrated
    family: str
    source: str | Path
    canary: dict[str, Any] | None
    head_fit: dict[str, float] | None


def build_model(data: PreparedData, config: TrainConfig, out_dir: Path, emit: ProgressCallback,
                should_cancel: CancelCheck | None, resume: bool, explicit_keys: set[str]) -> DefendedModel:
    """Load the backbone, adjust the settings to its family, calibrate (canary), apply the defense."""
    from core.canary_run import maybe_calibrate
    from core.defenses.build import defend
    from core.models.backbones import family, load_backbone, resolve_model_source

    emit(ProgressEvent(kind="phase", phase="loading", message=f"loading backbone {config.model}"))
    source = resolve_model_source(config.model)
    model, tokenizer = load_backbone(source, data.label_map, seed=config.seed)
    fam = family(model)
    config = family_adjusted(config, fam, explicit_keys)
    # Canary calibration (optional) may pick the epoch and settings; it must run before the defense is
    # built because the chosen settings can change it. No planted trigger reaches the shipped model.
    config, canary = maybe_calibrate(config, data, source, fam, tokenizer, out_dir, emit, should_cancel, resume)
    model, head_fit = defend(model, tokenizer, config, fam, data.aux)
    if head_fit is not None:
        emit(ProgressEvent(kind="log", phase="loading", message="head initialised from a linear probe on aux",
                           metrics=head_fit))
    return DefendedModel(model=model, tokenizer=tokenizer, config=config, family=fam, source=source,
                         canary=canary, head_fit=head_fit)


@dataclass(frozen=True)
class Trained:
    """What training gives: the loop's outcome (the chosen epoch's weights are loaded in the model)."""

    outcome: TrainOutcome
    analysis_files: list[Path]  # frequency-analysis report files; empty when the analysis did not run


def train_model(built: DefendedModel, data: PreparedData, out_dir: Path, emit: ProgressCallback,
                should_cancel: CancelCheck | None, resume: bool) -> Trained:
    """Train on `data.train` (aligned on aux, the epoch chosen on select), checkpointing to out_dir/checkpoints."""
    from core.training.loop import train

    config, model, tokenizer = built.config, built.model, built.tokenizer
    emit(ProgressEvent(kind="phase", phase="training", message=f"training with {config.method}"))
    tracker = frequency_tracker(model, tokenizer, data, config, emit)
    outcome = train(model, tokenizer, data.train, data.aux, data.select, config,
                    ckpt_dir=out_dir / "checkpoints", progress=emit, should_cancel=should_cancel,
                    resume=resume, monitors=epoch_monitors(data), step_callback=tracker)
    analysis_files = tracker.finish(out_dir / "analysis") if tracker is not None else []
    return Trained(outcome=outcome, analysis_files=analysis_files)


def epoch_monitors(data: PreparedData) -> dict[str, list[Example]]:
    """What the loop scores after each epoch (never used to choose): the probes and, with them, the floor."""
    from core.attacks.probes import floor_rows

    if not data.probes:
        return {}
    floor = floor_rows(data.eval, data.target)
    return {**data.probes, **({FLOOR_MONITOR: floor} if floor else {})}


class FrequencyHook:
    """Runs the frequency analysis as the training loop's step callback and reports each record."""

    def __init__(self, tracker: Any, epochs: int, emit: ProgressCallback) -> None:
        self.tracker, self.epochs, self.emit = tracker, epochs, emit

    def __call__(self, model: Any, step: int, epoch: int) -> None:
        if epoch > self.epochs:  # the authors follow the first 10 epochs only
            return
        record = self.tracker.maybe(model, step)
        if record is not None:
            i = self.tracker.report_index  # δ = 4, the value the paper reports
            summary = {name: {k: (v[i] if isinstance(v, list) else v) for k, v in values.items()}
                       for name, values in record["sets"].items()}
            self.emit(ProgressEvent(kind="log", phase="training", epoch=epoch, step=step,
                                    message="frequency analysis", metrics={"frequency": summary}))

    def finish(self, out: Path) -> list[Path]:
        from core.analysis.plots import write_report

        return write_report(self.tracker, out)


def frequency_tracker(model: Any, tokenizer: Any, data: PreparedData, config: TrainConfig,
                      emit: ProgressCallback) -> FrequencyHook | None:
    """A hook when the analysis is on and the backdoor rows are known (a probe, or rows marked poisoned)."""
    if config.frequency_every <= 0:
        return None
    from core.analysis.frequency import build_tracker

    backdoor = next(iter(data.probes.values()), None) or [r for r in data.train if r.poisoned]
    if not backdoor:
        emit(ProgressEvent(kind="log", phase="training", message="frequency analysis skipped: no probe and "
                           "no training rows marked poisoned"))
        return None
    tracker = build_tracker(model, tokenizer, data.select, backdoor, data.target, len(data.label_map.id2label),
                            every=config.frequency_every, squared=config.frequency_squared,
                            max_length=config.max_length, max_rows=config.frequency_max_rows, seed=config.seed)
    return FrequencyHook(tracker, config.frequency_epochs, emit)
