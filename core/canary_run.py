"""Canary calibration of a job: train candidate settings on a canary-planted copy of the training data,
choose the epoch (and optionally the setting) by canary ASR against clean selection accuracy, and hand
back the chosen config with ``fixed_epoch`` set. The shipped model is then trained on the user's data
without the canary (`maybe_calibrate` is the pipeline's entry point).

Files under ``out_dir/canary``: ``secret`` (the per-job secret, so an interrupted calibration resumes
with the same canary) and ``cand{i}/`` checkpoints while it runs; once a report exists they are deleted,
since they hold models carrying the planted trigger and the means to rebuild it; ``report.json`` (the
chosen config and the public report) makes a resumed job skip calibration.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from core.attacks.probes import floor_rows
from core.config import TrainConfig, fields_with
from core.data.dataset import Example
from core.defenses.canary import (
    CanarySpec,
    canary_probe,
    choose_epoch,
    choose_setting,
    decoy_probe,
    new_secret,
    plant_canary,
)
from core.errors import ConfigError
from core.interface import CancelCheck, ProgressCallback, ProgressEvent

if TYPE_CHECKING:  # annotations only: torch loads when a calibration runs
    from torch import nn

    from core.prepared import PreparedData

CANARY_DIR = "canary"
REPORT = "report.json"
SECRET = "secret"
CANARY = "canary"  # monitor: triggered select rows (accuracy = canary ASR)
FLOOR = "canary_floor"  # monitor: the same rows untriggered (share of clean rows already called target)
DECOY = "canary_decoy"  # monitor: the same rows with never-planted decoy tokens (the lift's baseline)
PROBE_PREFIX = "probe:"  # monitors: the job's own attack probes, when it has any
PUBLIC_EXTRA = ("chance_accuracy", "warning", "screen")  # report fields kept in `extra`
CHANCE_MARGIN = 0.02  # a chosen epoch within this of the majority-class share learned nothing
# Settings a grid may not vary: calibration's own knobs, and those that change the data or the backbone.
NOT_IN_GRID = fields_with("canary") | fields_with("fixed")


@dataclass
class CanaryReport:
    config: TrainConfig  # the chosen setting, with fixed_epoch = the chosen epoch
    canary_asr: float
    canary_select_accuracy: float | None
    epoch: int
    candidates: list[dict[str, Any]]
    reason: str
    spec: dict[str, Any]  # CanarySpec.public(): no tokens, only their sha256
    chosen: int = 0
    max_asr: float = 0.0
    probe_rows: int = 0
    target_label: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """What metrics.json holds under "canary" (JSON-safe; never the tokens)."""
        return {
            "canary_asr": self.canary_asr,
            "select_accuracy": self.canary_select_accuracy,
            # Clean non-target rows already called the canary class: an ASR near this is no backdoor.
            "canary_floor": self.candidates[self.chosen].get("canary_floor"),
            # The same rows with never-planted decoy tokens: canary_asr minus this is the canary's lift.
            "canary_decoy_asr": self.candidates[self.chosen].get("canary_decoy"),
            "epoch": self.epoch,
            "reason": self.reason,
            "chosen_candidate": self.chosen,
            "settings": self.candidates[self.chosen]["settings"],
            "max_asr": self.max_asr,
            "probe_rows": self.probe_rows,
            # The probe is small when the selection set is: say how far the estimate can be trusted.
            "canary_asr_ci95": wilson_interval(self.canary_asr, self.probe_rows),
            "target_label": self.target_label,
            **{k: v for k, v in self.extra.items() if k in PUBLIC_EXTRA},
            **self.spec,
            "candidates": self.candidates,
            "note": ("canary_asr: attack success of a secret synthetic dirty-label trigger planted at "
                     f"rate {self.spec.get('rate')} in a copy of the training data, on held-back clean "
                     "selection rows, at the chosen setting and epoch; an estimate of how well this "
                     "training suppresses a backdoor. The shipped model was trained without the canary."),
        }


def wilson_interval(rate: float, n: int, z: float = 1.96) -> list[float] | None:
    """95% Wilson score interval of a proportion measured on ``n`` rows (None without rows)."""
    if n <= 0:
        return None
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


# ----------------------------------------------------------------------------------------------------
# Candidates


def grid_candidates(config: TrainConfig) -> list[tuple[dict[str, Any], TrainConfig]]:
    """(settings, config) for each point of ``config.canary_grid`` (cartesian product, in the grid's
    order); one candidate, ``config`` itself, without a grid. Values are validated like user input
    (``model_copy(update=...)`` would not validate them)."""
    grid = config.canary_grid or {}
    unknown = sorted(set(grid) - set(TrainConfig.model_fields))
    if unknown:
        raise ConfigError(f"canary_grid: unknown settings {unknown}")
    refused = sorted(set(grid) & NOT_IN_GRID)
    if refused:
        raise ConfigError(f"canary_grid cannot vary {refused}")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"canary_grid[{key!r}] must be a non-empty list of values")
    keys = list(grid)
    base = config.model_dump()
    out = []
    for values in itertools.product(*(grid[k] for k in keys)):
        settings = dict(zip(keys, values, strict=True))
        try:
            candidate = TrainConfig(**{**base, **settings})
        except ValidationError as exc:
            raise ConfigError(f"canary_grid point {settings} is not a valid setting: {exc}") from exc
        out.append((settings, candidate))
    return out


# ----------------------------------------------------------------------------------------------------
# Files


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def _write_secret(path: Path, secret: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # owner only: it rebuilds the canary
    with os.fdopen(fd, "w") as fh:
        fh.write(f"{secret}\n")
    os.replace(tmp, path)


def _fingerprint(config: TrainConfig, data: PreparedData) -> str:
    """What a cached report depends on: the non-runtime settings and the rows it trained/selected on."""
    from core.training.loop import RUNTIME_FIELDS, fingerprint_rows

    settings = {k: v for k, v in config.model_dump(mode="json").items() if k not in RUNTIME_FIELDS}
    payload = json.dumps({"config": settings, "train": fingerprint_rows(data.train),
                          "aux": fingerprint_rows(data.aux), "select": fingerprint_rows(data.select)},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _load_report(path: Path, fingerprint: str) -> CanaryReport:
    saved = json.loads(path.read_text())
    if saved.get("fingerprint") != fingerprint:
        raise ConfigError(f"cannot resume from {path}: the settings or data changed since the canary "
                          "calibration ran; start afresh (resume=False)")
    public = saved["report"]
    spec_keys = ("target", "rate", "seed", "rows_planted", "num_tokens", "tokens_sha256")
    return CanaryReport(config=TrainConfig(**saved["config"]), canary_asr=public["canary_asr"],
                        canary_select_accuracy=public["select_accuracy"], epoch=public["epoch"],
                        candidates=public["candidates"], reason=public["reason"],
                        spec={k: public[k] for k in spec_keys}, chosen=public["chosen_candidate"],
                        max_asr=public["max_asr"], probe_rows=public["probe_rows"],
                        target_label=public["target_label"],
                        extra={"resumed": True, **{k: public[k] for k in PUBLIC_EXTRA if k in public}})


# ----------------------------------------------------------------------------------------------------
# The calibration


def calibrate_with_canary(model_factory: Callable[[TrainConfig], nn.Module], tokenizer: Any,
                          data: PreparedData, config: TrainConfig, out_dir: Path,
                          progress: ProgressCallback | None = None, should_cancel: CancelCheck | None = None,
                          resume: bool = False, secret: int | None = None) -> CanaryReport:
    """Train every candidate setting on the canary-planted training data and choose epoch and setting.

    ``model_factory(candidate_config)`` returns a fresh defended model (as `apply_defense` does).
    ``data.select`` is the held-back clean data: selection accuracy on it, and the canary probe built
    from its rows. ``secret`` (tests) fixes the canary; by default it is drawn from os.urandom once per
    job and kept in ``out_dir/canary/secret`` until the report is written. Raises `JobCancelled` via
    the training loop when ``should_cancel()`` turns True; ``resume=True`` continues from there.
    """
    emit = progress or (lambda event: None)
    folder = Path(out_dir) / CANARY_DIR
    report_path = folder / REPORT
    fingerprint = _fingerprint(config, data)
    if resume and report_path.is_file():
        emit(ProgressEvent(kind="log", phase="training", message="canary calibration already done"))
        return _load_report(report_path, fingerprint)
    secret = _open_folder(folder, resume, secret)
    candidates = grid_candidates(config)  # validate before any training
    canary = _plant(data, config, secret)
    emit(ProgressEvent(kind="phase", phase="training",
                       message=f"canary calibration: {len(candidates)} candidate setting(s), "
                               f"{canary.spec.rows_planted} canary rows planted"))
    results: list[dict[str, Any]] = []
    for i, (settings, candidate) in enumerate(candidates):
        label = ", ".join(f"{k}={v}" for k, v in settings.items()) or "the job's settings"
        emit(ProgressEvent(kind="log", phase="training",
                           message=f"canary calibration: candidate {i + 1}/{len(candidates)} ({label})",
                           metrics={"candidate": i, "settings": settings}))
        model = model_factory(candidate)
        per_epoch = _train_candidate(model, tokenizer, canary, data, candidate, folder / f"cand{i}",
                                     _relay(emit, i, len(candidates)), should_cancel, resume)
        del model
        _free_device_memory()
        results.append(_candidate_result(i, settings, candidate, config, per_epoch))
    report = _choose_report(results, candidates, config, canary, data)
    _write_json_atomic(report_path, {"fingerprint": fingerprint,
                                     "config": report.config.model_dump(mode="json"),
                                     "report": report.to_dict()})
    # The candidates' checkpoints carry the planted trigger and the secret rebuilds it: neither may
    # outlive the calibration (the report above is enough to resume).
    for i in range(len(candidates)):
        shutil.rmtree(folder / f"cand{i}", ignore_errors=True)
    (folder / SECRET).unlink(missing_ok=True)
    emit(ProgressEvent(kind="log", phase="training",
                       message=f"canary calibration chose {report.reason}; canary ASR {report.canary_asr:.4f}",
                       metrics={"canary_asr": report.canary_asr, "epoch": report.epoch,
                                "settings": results[report.chosen]["settings"]}))
    return report


def _open_folder(folder: Path, resume: bool, secret: int | None) -> int:
    """A fresh calibration folder (kept on resume) holding the secret; returns the secret."""
    secret_path = folder / SECRET
    if not resume or not secret_path.is_file():
        shutil.rmtree(folder, ignore_errors=True)  # stale candidates would hold another canary
    folder.mkdir(parents=True, exist_ok=True)
    if secret is None:
        secret = int(secret_path.read_text()) if secret_path.is_file() else new_secret()
    _write_secret(secret_path, secret)
    return secret


@dataclass
class _Planted:
    """The canary-planted training rows and what measures the canary."""

    rows: list[Example]
    spec: CanarySpec
    probe: list[Example]
    monitors: dict[str, list[Example]]
    chance: float | None
    screen_check: dict[str, Any] | None


def _plant(data: PreparedData, config: TrainConfig, secret: int) -> _Planted:
    if not data.select:
        raise ConfigError("canary calibration needs held-back clean selection rows")
    num_labels = len(data.label_map.id2label)
    planted, spec = plant_canary(data.train, num_labels, config.canary_rate, config.seed, secret=secret,
                                 avoid_texts=[e.text for e in (*data.aux, *data.select)])
    screen_check = screen_finds_canary(planted, data, config)
    probe = canary_probe(data.select, spec)
    if not probe:
        raise ConfigError("canary calibration: every selection row has the canary's class; the canary "
                          "ASR cannot be measured (add selection rows of other classes)")
    # The same rows, untriggered: how often clean rows are already called the canary class (ASR floor).
    floor = floor_rows(data.select, spec.target)
    # The job's own attack probes too (simulation runs): their ASR beside the canary's, epoch by epoch,
    # is the evidence of how well the canary tracks a real backdoor (bench/notes/muscle-efficacy-study.md).
    monitors = {CANARY: probe, FLOOR: floor, DECOY: decoy_probe(data.select, spec),
                **{PROBE_PREFIX + name: rows for name, rows in data.probes.items()}}
    return _Planted(rows=planted, spec=spec, probe=probe, monitors=monitors, chance=majority_share(data.select),
                    screen_check=screen_check)


def _train_candidate(model: nn.Module, tokenizer: Any, canary: _Planted, data: PreparedData,
                     candidate: TrainConfig, ckpt_dir: Path, progress: ProgressCallback,
                     should_cancel: CancelCheck | None, resume: bool) -> list[dict[str, Any]]:
    from core.training.loop import train

    outcome = train(model, tokenizer, canary.rows, data.aux, data.select, candidate, ckpt_dir=ckpt_dir,
                    progress=progress, should_cancel=should_cancel, resume=resume, monitors=canary.monitors)
    return outcome.per_epoch


def _candidate_result(i: int, settings: dict[str, Any], candidate: TrainConfig, config: TrainConfig,
                      per_epoch: list[dict[str, Any]]) -> dict[str, Any]:
    """One candidate's chosen epoch (canary rule, or its fixed_epoch) and its per-epoch canary figures."""
    if candidate.fixed_epoch is not None:  # the user fixed the epoch: only the setting is chosen
        epoch, reason = candidate.fixed_epoch, f"epoch {candidate.fixed_epoch}: fixed_epoch set"
    else:
        epoch, reason = choose_epoch(per_epoch, CANARY, max_asr=config.canary_max_asr,
                                     floor_key=DECOY if config.canary_criterion == "lift" else None)
    rec = per_epoch[epoch - 1]
    return {
        "candidate": i,
        "settings": settings,
        "epoch": epoch,
        "select_accuracy": rec["select_accuracy"],
        "canary_asr": rec["monitors"][CANARY],
        "canary_floor": rec["monitors"][FLOOR],
        "canary_decoy": rec["monitors"][DECOY],
        "probe_asr": _probe_asr(rec),
        "reason": reason,
        "per_epoch": [{"epoch": r["epoch"], "select_accuracy": r["select_accuracy"],
                       "canary_asr": r["monitors"][CANARY], "canary_floor": r["monitors"][FLOOR],
                       "canary_decoy": r["monitors"][DECOY], "probe_asr": _probe_asr(r)}
                      for r in per_epoch],
    }


def _choose_report(results: list[dict[str, Any]], candidates: list[tuple[dict[str, Any], TrainConfig]],
                   config: TrainConfig, canary: _Planted, data: PreparedData) -> CanaryReport:
    """The setting with the best selection accuracy within the canary limit, as the report."""
    lift = config.canary_criterion == "lift"
    chosen, qualified = choose_setting(results, max_asr=config.canary_max_asr, lift=lift)
    best = results[chosen]
    reason = best["reason"]
    if len(results) > 1:
        what = "canary lift" if lift else "canary ASR"
        reason = (f"candidate {chosen} ({', '.join(f'{k}={v}' for k, v in best['settings'].items())}): "
                  + (f"highest selection accuracy among settings within the {what} limit"
                     if qualified else f"no setting kept the {what} within the limit; lowest")
                  + f"; {reason}")
    return CanaryReport(
        config=candidates[chosen][1].model_copy(update={"fixed_epoch": best["epoch"]}),
        canary_asr=best["canary_asr"], canary_select_accuracy=best["select_accuracy"], epoch=best["epoch"],
        candidates=results, reason=reason, spec=canary.spec.public(), chosen=chosen,
        max_asr=config.canary_max_asr, probe_rows=len(canary.probe),
        target_label=str(data.label_map.id2label[canary.spec.target]),
        extra={"chance_accuracy": canary.chance, **_chance_warning(best["select_accuracy"], canary.chance),
               **({"screen": canary.screen_check} if canary.screen_check is not None else {})})


def screen_finds_canary(planted: list[Example], data: PreparedData, config: TrainConfig) -> dict[str, Any] | None:
    """The canary measures the screen too: run the lexical screen on the canary-planted copy (the job's own
    training rows, already screened, plus the canary) and say how many canary rows it removed."""
    if not config.screen:
        return None
    from core.screen.stage import screen_examples, settings_from

    report = screen_examples(planted, data.trusted, settings_from(config))
    canary = {i for i, (ex, was) in enumerate(zip(planted, data.train, strict=True)) if ex.text != was.text}
    removed = len(canary & report.removed_rows)
    return {"canary_rows": len(canary), "canary_rows_removed": removed,
            "found": bool(canary) and removed >= len(canary) / 2,
            "other_rows_removed": len(report.removed_rows - canary)}


def majority_share(rows: list[Example]) -> float | None:
    """Accuracy of always answering the commonest label of ``rows`` (None without rows)."""
    if not rows:
        return None
    counts: dict[int, int] = {}
    for e in rows:
        counts[e.label] = counts.get(e.label, 0) + 1
    return max(counts.values()) / len(rows)


def _chance_warning(accuracy: float | None, chance: float | None) -> dict[str, str]:
    """A low canary ASR means nothing when the model learned nothing: say so in the report."""
    if accuracy is None or chance is None or accuracy > chance + CHANCE_MARGIN:
        return {}
    return {"warning": (f"the chosen epoch's selection accuracy ({accuracy:.4f}) is at chance (majority "
                        f"class {chance:.4f}): the canary was kept out only because the model did not "
                        "learn; do not read canary_asr as backdoor suppression")}


def _probe_asr(record: dict[str, Any]) -> dict[str, float]:
    """The job's attack probes' ASR in one epoch record of a canary candidate."""
    return {k[len(PROBE_PREFIX):]: v for k, v in (record.get("monitors") or {}).items()
            if k.startswith(PROBE_PREFIX)}


def _relay(emit: ProgressCallback, index: int, total: int) -> ProgressCallback:
    """Step events pass through (liveness, ETA); a candidate's epoch events become log lines, so the
    job's per-epoch records stay those of the shipped run."""
    def relay(event: ProgressEvent) -> None:
        if event.kind != "epoch":
            emit(event)
            return
        m = event.metrics or {}
        mon = m.get("monitors") or {}
        acc, asr = m.get("select_accuracy"), mon.get(CANARY)
        emit(ProgressEvent(
            kind="log", phase="training",
            message=(f"canary candidate {index + 1}/{total}, epoch {event.epoch}: selection accuracy "
                     f"{acc if acc is None else round(acc, 4)}, canary ASR "
                     f"{asr if asr is None else round(asr, 4)}"),
            metrics={"candidate": index, "epoch": event.epoch, "select_accuracy": acc, "canary_asr": asr,
                     "canary_floor": mon.get(FLOOR)}))
    return relay


def _free_device_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def maybe_calibrate(config: TrainConfig, data: PreparedData, source: str | Path, fam: str, tokenizer: Any,
                    out_dir: Path, progress: ProgressCallback | None = None,
                    should_cancel: CancelCheck | None = None, resume: bool = False,
                    ) -> tuple[TrainConfig, dict[str, Any] | None]:
    """The pipeline's hook: (config, None) without ``config.canary``; else calibrate and return the
    chosen config (``fixed_epoch`` set) and the report for metrics.json. Call it before `defend`
    on the shipped model, since the chosen setting may change the defense."""
    if not config.canary:
        return config, None
    from core.defenses.build import defend
    from core.models.backbones import load_backbone

    def factory(candidate: TrainConfig) -> nn.Module:
        # Same load seed as the shipped model, so a candidate starts where the final run starts.
        model, _ = load_backbone(str(source), data.label_map, seed=candidate.seed)
        return defend(model, tokenizer, candidate, fam, data.aux)[0]

    report = calibrate_with_canary(factory, tokenizer, data, config, out_dir, progress, should_cancel,
                                   resume)
    return report.config, report.to_dict()
