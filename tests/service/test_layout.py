"""The layering rules: api/ and worker/ never import each other; core/jobs has no web or queue imports;
only migrations make the schema."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imports(folder: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (ROOT / folder).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def test_api_and_worker_do_not_import_each_other() -> None:
    for path, names in imports("api").items():
        assert "worker" not in names, path
    for path, names in imports("worker").items():
        assert "api" not in names, path


def test_core_jobs_has_no_web_or_queue_imports() -> None:
    for path, names in imports("core/jobs").items():
        assert not names & {"api", "worker", "fastapi", "starlette", "celery", "kombu", "uvicorn"}, path


def test_schema_is_made_only_by_migrations() -> None:
    for folder in ("api", "worker", "core/jobs"):
        for path in (ROOT / folder).rglob("*.py"):
            assert "create_all(" not in path.read_text(), path


def test_every_setting_is_documented() -> None:
    from core.jobs.settings import Settings

    docs = (ROOT / "docs" / "service.md").read_text()
    compose = (ROOT / "docker-compose.yml").read_text()
    for name in Settings.model_fields:
        assert f"`MUSCLE_{name.upper()}`" in docs, name
    for name in ("DATABASE_URL", "BROKER_URL", "ARTIFACTS", "S3_ENDPOINT_URL", "WORK_DIR"):
        assert f"MUSCLE_{name}" in compose, name
