"""The job contract (core/service/contract.py) the API writes and the worker reads."""

from __future__ import annotations

import ast
from pathlib import Path

from core.service import contract, models
from core.service.contract import EVENT_TYPES, PROGRESS_FIELDS, JobSpec, Progress

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


def _literal_types(node: ast.expr) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        return _literal_types(node.body) + _literal_types(node.orelse)
    return []


def test_every_event_type_written_is_in_the_contract_and_documented() -> None:
    root = Path(__file__).resolve().parents[1]
    written: set[str] = set()
    for package in ("core", "api", "worker"):
        for path in (root / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "add_event" and len(node.args) > 2:
                    written.update(_literal_types(node.args[2]))
    # the progress recorder passes its types in (type, message, data) tuples
    recorder = ast.parse((root / "worker" / "progress.py").read_text(encoding="utf-8"))
    written.update(n.elts[0].value for n in ast.walk(recorder)
                   if isinstance(n, ast.Tuple) and len(n.elts) == 3 and isinstance(n.elts[0], ast.Constant))
    assert {"job.created", "job.failed", "phase", "metrics", "epoch", "message"} <= written
    assert written <= set(EVENT_TYPES), written - set(EVENT_TYPES)
    docs = (root / "docs" / "service.md").read_text(encoding="utf-8").split("### Events", 1)[1]
    assert [t for t in EVENT_TYPES if f"`{t}`" not in docs] == []
