"""One job, start to end: validate inputs, build the defended model, train, export, evaluate, report.

The reported metrics are computed on the exported merged model, re-loaded from disk with plain
transformers, so anybody holding the artifacts can recompute them.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import LLAMA_REFERENCE, TrainConfig
from core.data.dataset import Example, check_aux, load_examples, stratified_split
from core.data.labels import LabelMap
from core.data.table import read_table
from core.errors import ConfigError, DataError
from core.interface import CancelCheck, JobInputs, JobResult, ProgressCallback, ProgressEvent
from core.metrics import FLOOR_MONITOR
from core.prepared import PreparedData


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def epoch_monitors(data: PreparedData) -> dict[str, list[Example]]:
    """What the loop scores after each epoch (never used to choose): the probes and, with them, the floor."""
    from core.attacks.probes import floor_rows

    if not data.probes:
        return {}
    floor = floor_rows(data.eval, data.target)
    return {**data.probes, **({FLOOR_MONITOR: floor} if floor else {})}


def validate_inputs(inputs: JobInputs, config: TrainConfig) -> PreparedData:
    """Read and check every input file before any training; raises DataError / ConfigError."""
    cols = {"text_column": inputs.text_column, "label_column": inputs.label_column}
    _check_files_exist(inputs)
    label_map, target = _labels(inputs, config, cols)
    train = load_examples(inputs.train, label_map, role="train", **cols)
    aux = load_examples(inputs.aux, label_map, role="aux", **cols)
    check_aux(aux, label_map, config.min_aux_per_class, str(inputs.aux))
    sources: dict[str, str] = {}

    if inputs.select is not None:
        select = load_examples(inputs.select, label_map, role="select", **cols)
        sources["select"] = f"file {inputs.name('select', Path(inputs.select))}"
    else:
        # Epoch choice needs clean rows never trained on and never reported on: a slice of aux.
        aux, select = stratified_split(aux, config.select_fraction, config.seed)
        sources["select"] = f"aux hold-out ({len(select)} of the aux rows, not used for alignment)"

    if inputs.eval is not None:
        eval_rows = load_examples(inputs.eval, label_map, role="eval", **cols)
        sources["cacc"] = f"eval file {inputs.name('eval', Path(inputs.eval))}"
    else:
        train, eval_rows = stratified_split(train, config.eval_holdout_fraction, config.seed)
        sources["cacc"] = (f"train hold-out ({len(eval_rows)} rows not trained on; untrusted: may "
                           "contain poisoned rows)")

    probes = _load_probes(inputs, config, eval_rows, label_map, target, cols, sources)
    return PreparedData(label_map, target, train, aux, select, eval_rows, probes, sources, _input_hashes(inputs),
                        select_from_aux=inputs.select is None)


def _check_files_exist(inputs: JobInputs) -> None:
    named = [("train", inputs.train), ("aux", inputs.aux), ("eval", inputs.eval), ("select", inputs.select),
             *[(f"probe:{k}", v) for k, v in inputs.probe_files.items()]]
    for role, path in named:
        if path is not None and not Path(path).is_file():
            raise DataError("file not found", file=str(path), role=role)


def _labels(inputs: JobInputs, config: TrainConfig, cols: dict[str, str]) -> tuple[LabelMap, int]:
    """The label map of the training file and the target label's id in it."""
    raw_train = read_table(inputs.train, role="train", **cols)
    label_map = LabelMap.from_labels([r.label for r in raw_train if r.label is not None])
    if len(label_map.id2label) < 2:
        raise DataError("the training file has fewer than 2 distinct labels", file=str(inputs.train),
                        field=inputs.label_column, role="train")
    try:
        target = label_map.resolve_target(str(config.target_label))
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"target_label {config.target_label!r} is not a label of the training file "
                          f"(labels: {sorted(label_map.label2id)})") from exc
    return label_map, target


def _load_probes(inputs: JobInputs, config: TrainConfig, eval_rows: list[Example], label_map: LabelMap,
                 target: int, cols: dict[str, str], sources: dict[str, str]) -> dict[str, list[Example]]:
    """Built-in probes (triggered eval rows) and probe files; notes OpenBackdoor-layout files in ``sources``."""
    from core.attacks.probes import build_probe, load_probe_file
    from core.attacks.triggers import parse_trigger

    probes: dict[str, list[Example]] = {}
    for spec in inputs.probes:
        name, trigger = parse_trigger(spec)
        probes[name] = build_probe(eval_rows, trigger, target, config.seed)
    for name, path in inputs.probe_files.items():
        if name in probes:
            raise ConfigError(f"probe name {name!r} given twice")
        probes[name] = load_probe_file(path, label_map, target, role=f"probe:{name}", **cols)
        if all(r.orig_label is None for r in probes[name]):
            sources[f"probe:{name}"] = (f"all {len(probes[name])} rows of {inputs.name(f'probe:{name}', Path(path))} "
                                        "counted as triggered non-target rows: every row carries the target label "
                                        "and no orig_label column says otherwise (OpenBackdoor's layout)")
    for name, rows in probes.items():
        if name == FLOOR_MONITOR:
            raise ConfigError(f"probe name {name!r} is reserved for the per-epoch ASR floor; pick another")
        if not rows:
            raise ConfigError(f"probe {name!r} has no rows whose true label is not the target")
    return probes


def _input_hashes(inputs: JobInputs) -> dict[str, str]:
    sha = {role: file_sha256(Path(p)) for role, p in
           [("train", inputs.train), ("aux", inputs.aux), ("eval", inputs.eval), ("select", inputs.select)]
           if p is not None}
    sha.update({f"probe:{k}": file_sha256(Path(v)) for k, v in inputs.probe_files.items()})
    return sha


def versions() -> dict[str, str]:
    import peft
    import torch
    import transformers

    import core

    return {"muscle": core.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "python": platform.python_version()}


def family_adjusted(config: TrainConfig, family: str, explicit: set[str]) -> TrainConfig:
    """The authors ran Llama with other settings; apply them under `reference` unless set by the user."""
    if family != "llama" or config.profile != "reference":
        return config
    updates = {k: v for k, v in LLAMA_REFERENCE.items() if k not in explicit}
    return config.model_copy(update=updates)


def evaluate_classifier(model: Any, tokenizer: Any, eval_rows: list[Example],
                        probes: dict[str, list[Example]], target: int, config: TrainConfig,
                        ) -> tuple[float, dict[str, float], float | None]:
    """CACC on every eval row; ASR per probe over rows whose true label is not the target; and the
    floor an ASR must be read against: the share of clean non-target eval rows already put in the
    target class (None when every eval row has the target label)."""
    from core.metrics import accuracy, attack_success_rate
    from core.training.predict import predict_logits

    def preds(rows: list[Example]) -> list[int]:
        logits = predict_logits(model, tokenizer, [r.text for r in rows], config.eval_batch_size,
                                config.max_length, device=config.device)
        return logits.argmax(-1).tolist()

    eval_preds = preds(eval_rows)
    labels = [r.label for r in eval_rows]
    cacc = accuracy(eval_preds, labels)
    floor = (attack_success_rate(eval_preds, labels, target) if any(y != target for y in labels) else None)
    asr = {name: attack_success_rate(preds(rows), [r.orig_label for r in rows], target)
           for name, rows in probes.items()}
    return cacc, asr, floor


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


def run_screen(data: PreparedData, config: TrainConfig, out_dir: Path, emit: ProgressCallback,
               resume: bool = False) -> dict[str, Any] | None:
    """Drop the rows the screen finds from `data.train` (in place) and write screen.json and removed.tsv.

    It checks suspects against the trusted aux file's rows (a --select file is for choosing the epoch)."""
    if not config.screen:
        return None
    from core.screen.stage import kept, screen_examples, settings_from

    saved = out_dir / "screen" / "screen.json"
    if resume and saved.is_file():  # the screen is deterministic: a resumed job takes what it found
        summary = json.loads(saved.read_text())
        gone = {r["row"] for r in summary.pop("removed")}
        data.train = [ex for i, ex in enumerate(data.train) if i not in gone]
        return summary

    emit(ProgressEvent(kind="phase", phase="screening", message="screening the training rows"))
    report = screen_examples(data.train, data.trusted, settings_from(config), data.label_map.names)
    if config.screen_learned:
        from core.models.backbones import resolve_model_source
        from core.screen.learned import backbone_bait
        from core.screen.stage import add_learned, learned_settings_from

        emit(ProgressEvent(kind="log", phase="screening", message="learned screen: cross-fitted bait run"))
        represent = backbone_bait(resolve_model_source(config.model), data.label_map, config)
        report = add_learned(report, data.train, data.trusted, represent, learned_settings_from(config),
                             data.label_map.names)
    report.write(out_dir / "screen")
    data.train = kept(data.train, report)
    if len(data.train) == 0:
        raise DataError("the screen removed every training row; nothing is left to train on "
                        "(screen: false trains on all rows)", role="train")
    emit(ProgressEvent(kind="log", phase="screening",
                       message=f"screen removed {len(report.removed)} of {report.rows_in} rows",
                       metrics={"screen": report.summary(max_suspects=5)}))
    return report.summary()


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def run_pipeline(inputs: JobInputs, config: TrainConfig, out_dir: Path, progress: ProgressCallback | None,
                 should_cancel: CancelCheck | None, resume: bool,
                 explicit_keys: set[str] | None = None) -> JobResult:
    from core.model_card import write_model_card
    from core.training.loop import train

    emit = progress or (lambda event: None)
    started = time.time()
    metrics_path = out_dir / "metrics.json"
    if resume and metrics_path.is_file():  # already finished: nothing to redo
        metrics = json.loads(metrics_path.read_text())
        model_dir = out_dir / "model" if (out_dir / "model").is_dir() else None
        adapter_dir = out_dir / "adapter" if (out_dir / "adapter").is_dir() else None
        return JobResult(out_dir, metrics, model_dir, adapter_dir)

    emit(ProgressEvent(kind="phase", phase="validating", message="validating input files"))
    data = validate_inputs(inputs, config)
    emit(ProgressEvent(kind="log", phase="validating", message="inputs valid", metrics=data.summary()))
    out_dir.mkdir(parents=True, exist_ok=True)  # only now: bad input leaves no empty folder behind

    screen = run_screen(data, config, out_dir, emit, resume)
    built = _build_model(data, config, out_dir, emit, should_cancel, resume, explicit_keys or set())
    config, model, tokenizer = built.config, built.model, built.tokenizer

    emit(ProgressEvent(kind="phase", phase="training", message=f"training with {config.method}"))
    tracker = frequency_tracker(model, tokenizer, data, config, emit)
    outcome = train(model, tokenizer, data.train, data.aux, data.select, config,
                    ckpt_dir=out_dir / "checkpoints", progress=emit, should_cancel=should_cancel,
                    resume=resume, monitors=epoch_monitors(data), step_callback=tracker)
    analysis_files = tracker.finish(out_dir / "analysis") if tracker is not None else []

    scored = _export_and_score(built, data, out_dir, emit)
    metrics = _metrics(scored, built, outcome, data, screen, time.time() - started)
    if analysis_files:
        metrics["analysis_files"] = [str(p.relative_to(out_dir)) for p in analysis_files]
    if built.canary:
        metrics.update({"canary": built.canary, "canary_asr": built.canary["canary_asr"]})
    write_json_atomic(metrics_path, metrics)
    if scored.model_dir is not None:
        write_model_card(scored.model_dir, metrics)
    emit(ProgressEvent(kind="phase", phase="done", message="finished",
                       metrics={"cacc": scored.cacc, "asr": scored.asr, "best_epoch": outcome.best_epoch}))
    return JobResult(out_dir, metrics, scored.model_dir, scored.adapter_dir)


@dataclass
class _Built:
    """The defended model a run trains, and how it came to be."""

    model: Any
    tokenizer: Any
    config: TrainConfig  # family-adjusted, and the canary's choice when calibrated
    family: str
    source: str | Path
    canary: dict[str, Any] | None
    head_fit: dict[str, float] | None


def _build_model(data: PreparedData, config: TrainConfig, out_dir: Path, emit: ProgressCallback,
                 should_cancel: CancelCheck | None, resume: bool, explicit_keys: set[str]) -> _Built:
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
    return _Built(model=model, tokenizer=tokenizer, config=config, family=fam, source=source, canary=canary,
                  head_fit=head_fit)


@dataclass
class _Scored:
    model_dir: Path | None
    adapter_dir: Path | None
    cacc: float
    asr: dict[str, float]
    floor: float | None
    scored: str  # what the figures were computed on


def _export_and_score(built: _Built, data: PreparedData, out_dir: Path, emit: ProgressCallback) -> _Scored:
    """Export the merged model and the adapter, then score what is handed out (the merged folder, loaded as
    a user would; the model in memory when it cannot be merged)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from core.defenses.methods import export_adapter, export_merged
    from core.model_card import portable_base_name
    from core.models.backbones import quiet_transformers

    model, tokenizer, config = built.model, built.tokenizer, built.config
    emit(ProgressEvent(kind="phase", phase="exporting", message="merging and saving the model"))
    model_dir = export_merged(model, tokenizer, out_dir / "model", built.family)
    adapter_dir = export_adapter(model, out_dir / "adapter", base_name=portable_base_name(config.model))

    emit(ProgressEvent(kind="phase", phase="evaluating", message="evaluating the exported model"))
    if model_dir is not None:
        with quiet_transformers():
            eval_model = AutoModelForSequenceClassification.from_pretrained(model_dir)
            eval_tok = AutoTokenizer.from_pretrained(model_dir)
        scored = "exported merged model (model/)"
    else:
        eval_model, eval_tok = model, tokenizer
        scored = "trained model in memory (method cannot be merged; load adapter/ with the base model)"
    cacc, asr, floor = evaluate_classifier(eval_model, eval_tok, data.eval, data.probes, data.target, config)
    return _Scored(model_dir=model_dir, adapter_dir=adapter_dir, cacc=cacc, asr=asr, floor=floor, scored=scored)


def _metrics(scored: _Scored, built: _Built, outcome: Any, data: PreparedData, screen: Any,
             wall_seconds: float) -> dict[str, Any]:
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
