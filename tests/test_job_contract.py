"""The job contract (core/jobs/contract.py) the API writes and the worker reads."""

from __future__ import annotations

from pathlib import Path

from core.jobs import contract, models
from core.jobs.contract import PROGRESS_FIELDS, JobSpec, Progress

FILE = {"filename": "my train.tsv", "bytes": 10, "sha256": "ab", "rows": 2, "key": "k", "stored_as": "train.tsv",
        "file_id": None}


def test_a_spec_round_trips_and_builds_the_engine_inputs() -> None:
    spec = JobSpec(files={"train": FILE, "aux": {**FILE, "filename": "aux.csv"},
                          "probe:mine": {**FILE, "filename": "p.tsv"}},
                   probes=["badnets"], text_column="sentence", explicit_keys=["lr"])
    back = JobSpec.from_json(spec.to_json())
    assert back == spec
    inputs = back.engine_inputs({"train": Path("/w/train.tsv"), "aux": Path("/w/aux.csv"),
                                 "probe:mine": Path("/w/p.tsv")})
    assert (inputs.train, inputs.aux, inputs.eval) == (Path("/w/train.tsv"), Path("/w/aux.csv"), None)
    assert inputs.probe_files == {"mine": Path("/w/p.tsv")} and inputs.probes == ("badnets",)
    assert (inputs.text_column, inputs.label_column) == ("sentence", "label")
    assert inputs.name("train", Path("/w/train.tsv")) == "my train.tsv"


def test_a_stored_job_from_before_explicit_keys_still_reads() -> None:
    spec = JobSpec.from_json({"files": {"train": FILE, "aux": FILE}})
    assert (spec.probes, spec.text_column, spec.label_column, spec.explicit_keys) == ([], "text", "label", [])


def test_statuses_and_progress_fields_have_one_definition() -> None:
    assert models.STATUSES is contract.STATUSES and models.TERMINAL is contract.TERMINAL
    assert contract.Status.__args__ == contract.STATUSES  # type: ignore[attr-defined]
    assert PROGRESS_FIELDS == ("phase", "epoch", "total_epochs", "step", "total_steps", "loss", "eta_seconds")
    assert set(Progress.model_fields) == {*PROGRESS_FIELDS, "updated_at"}
