"""The job's stages (core/stages/): each module states its inputs and outputs, core/pipeline.py runs them in
order, and the names callers imported from core.pipeline are the stages' own objects."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from typing import Any

import pytest

import core.pipeline as pipeline

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("validate", "screen", "train", "export", "evaluate", "report")


@pytest.mark.parametrize("name", STAGES)
def test_each_stage_module_has_a_docstring(name: str) -> None:
    doc = importlib.import_module(f"core.stages.{name}").__doc__ or ""
    assert len(doc.split()) >= 20, name


def test_the_package_imports_no_stage() -> None:
    tree = ast.parse((ROOT / "core" / "stages" / "__init__.py").read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]


def test_re_exports_are_the_stages_objects() -> None:
    from core.stages import evaluate, report, screen, train, validate

    assert pipeline.validate_inputs is validate.validate_inputs
    assert pipeline.run_screen is screen.run_screen
    assert pipeline.evaluate_classifier is evaluate.evaluate_classifier
    assert pipeline.family_adjusted is train.family_adjusted
    assert pipeline.write_json_atomic is report.write_json_atomic
    assert set(pipeline.__all__) <= set(dir(pipeline))


def test_run_pipeline_calls_the_stages_in_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[str] = []

    class Data:
        def summary(self) -> dict[str, Any]:
            return {}

    class Scored:
        model_dir = adapter_dir = None

    def stage(name: str, result: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return result
        return run

    for name, result in [("validate_inputs", Data()), ("run_screen", None), ("build_model", "built"),
                         ("train_model", "trained"), ("export_model", "exported"), ("score_export", Scored()),
                         ("write_report", {"cacc": 1.0})]:
        monkeypatch.setattr(pipeline, name, stage(name, result))
    result = pipeline.run_pipeline(None, None, tmp_path / "out", None, None, resume=False)  # type: ignore[arg-type]
    assert calls == ["validate_inputs", "run_screen", "build_model", "train_model", "export_model",
                     "score_export", "write_report"]
    assert result.metrics == {"cacc": 1.0} and (tmp_path / "out").is_dir()
