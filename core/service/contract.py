"""The job contract between the API (which accepts a job) and the worker (which runs it).

They never import each other (tests/service/test_layout.py), so what both must agree on lives here:

* the statuses a job goes through (docs/service.md);
* `JobSpec`: what the API stores in ``Job.inputs`` (the stored input files, probes, columns, the settings
  the client chose) and what the worker reads back to build the engine's `JobInputs`;
* `Progress`: the progress snapshot the worker writes to ``Job.progress`` and the API returns;
* `EVENT_TYPES`: the event log's types (``add_event``; docs/service.md "Events").

Plain data: no web, queue or database imports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from core.interface import JobInputs

# Statuses: validating -> queued -> running -> evaluating -> succeeded | failed; on cancel cancelling ->
# cancelled. The last three are terminal.
VALIDATING, QUEUED, RUNNING, EVALUATING, CANCELLING = (
    "validating", "queued", "running", "evaluating", "cancelling")
SUCCEEDED, FAILED, CANCELLED = "succeeded", "failed", "cancelled"
STATUSES = (VALIDATING, QUEUED, RUNNING, EVALUATING, CANCELLING, SUCCEEDED, FAILED, CANCELLED)
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})
ACTIVE = frozenset({RUNNING, EVALUATING})  # a worker holds the lease
Status = Literal[STATUSES]  # type: ignore[valid-type]

# Event types: the job's lifecycle (api/, worker/, the reaper) and, written by the worker's progress
# recorder, `phase`, `metrics` (throttled steps), `epoch` and `message` (engine log lines).
EVENT_TYPES: tuple[str, ...] = (
    "job.created", "job.validated", "job.queued", "job.deferred", "job.started", "job.resumed",
    "phase", "metrics", "epoch", "message", "job.cancel_requested", "job.requeued", "artifact.uploaded",
    "warning", "job.succeeded", "job.failed", "job.cancelled")


# ``Job.progress``: the latest training state (the worker writes it, the API shows it). No docstring: it
# would become the schema's description in /openapi.json.
class Progress(BaseModel):
    phase: str | None = None
    epoch: int | None = None
    total_epochs: int | None = None
    step: int | None = None
    total_steps: int | None = None
    loss: float | None = None
    eta_seconds: float | None = None
    updated_at: int | None = None


# What the worker tracks between writes (``updated_at`` is stamped on each write).
PROGRESS_FIELDS: tuple[str, ...] = tuple(name for name in Progress.model_fields if name != "updated_at")


@dataclass
class JobSpec:
    """``Job.inputs``. ``files`` maps a role (train, aux, eval, probe:NAME) to the stored file: filename,
    bytes, sha256, rows, key (in the artifact store), stored_as (its file name in the job's folder),
    file_id (under /files, when registered)."""

    files: dict[str, dict[str, Any]]
    probes: list[str] = field(default_factory=list)  # built-in probes: badnets, addsent, insert:"text"
    text_column: str = "text"
    label_column: str = "label"
    explicit_keys: list[str] = field(default_factory=list)  # settings the client chose (family presets skip them)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobSpec:
        return cls(files=dict(data["files"]), probes=list(data.get("probes", ())),
                   text_column=data.get("text_column", "text"), label_column=data.get("label_column", "label"),
                   explicit_keys=list(data.get("explicit_keys", [])))

    def engine_inputs(self, paths: Mapping[str, Path]) -> JobInputs:
        """The engine's inputs, with the files at ``paths`` (role -> local path) and their owner's names."""
        return engine_inputs(paths, self.probes, self.text_column, self.label_column,
                             names={role: info["filename"] for role, info in self.files.items()})


def engine_inputs(paths: Mapping[str, Path], probes: list[str] | tuple[str, ...], text_column: str,
                  label_column: str, names: dict[str, str] | None = None) -> JobInputs:
    """`JobInputs` from files by role (train, aux, eval, probe:NAME)."""
    return JobInputs(
        train=paths["train"], aux=paths["aux"], eval=paths.get("eval"),
        probe_files={r.split(":", 1)[1]: p for r, p in paths.items() if r.startswith("probe:")},
        probes=tuple(probes), text_column=text_column, label_column=label_column, names=names or {})
