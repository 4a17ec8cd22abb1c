"""The layering rules: the engine (core/ outside core/service) imports neither the service layer nor any web
or queue code; core/service has no web or queue imports; api/ and worker/ never import each other; only
migrations make the schema."""

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


WEB_OR_QUEUE = {"api", "worker", "fastapi", "starlette", "celery", "kombu", "uvicorn"}
# The one way from the engine to the service layer: core/cli.py adds `serve`, `apikey` and `jobs` when the
# service layer is there, through a lazy import it guards with `except ImportError`.
ENGINE_HOOKS = {("core/cli.py", "core.service.cli")}


def engine_imports() -> dict[str, set[str]]:
    """Full module names each engine file imports (inside functions too), core/service left out."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / "core").rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[:2] == ("core", "service"):
            continue
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names if node.module == "core")
        found[rel.as_posix()] = names
    return found


def test_the_engine_does_not_import_the_service_layer() -> None:
    found = engine_imports()
    assert "core/pipeline.py" in found and "core/cli.py" in found  # the walk did reach the engine
    for path, names in found.items():
        service = {n for n in names if n == "core.service" or n.startswith("core.service.")}
        assert service <= {name for where, name in ENGINE_HOOKS if where == path}, (path, service)
        assert not {n.split(".")[0] for n in names} & WEB_OR_QUEUE, path


def test_the_engine_hook_stays_lazy_and_optional() -> None:
    tree = ast.parse((ROOT / "core" / "cli.py").read_text())
    top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    assert not any(getattr(n, "module", None) == "core.service.cli" for n in top)
    guarded = [
        n for n in ast.walk(tree) if isinstance(n, ast.Try)
        and any(isinstance(i, ast.ImportFrom) and i.module == "core.service.cli" for i in n.body)
        and any(isinstance(h.type, ast.Name) and h.type.id == "ImportError" for h in n.handlers)
    ]
    assert guarded, "core/cli.py must import core.service.cli inside try/except ImportError"


def test_core_service_has_no_web_or_queue_imports() -> None:
    for path, names in imports("core/service").items():
        assert not names & WEB_OR_QUEUE, path


def test_schema_is_made_only_by_migrations() -> None:
    for folder in ("api", "worker", "core/service"):
        for path in (ROOT / folder).rglob("*.py"):
            assert "create_all(" not in path.read_text(), path


def test_every_setting_is_documented() -> None:
    from core.service.settings import Settings

    docs = (ROOT / "docs" / "service.md").read_text()
    compose = (ROOT / "docker-compose.yml").read_text()
    for name in Settings.model_fields:
        assert f"`MUSCLE_{name.upper()}`" in docs, name
    for name in ("DATABASE_URL", "BROKER_URL", "ARTIFACTS", "S3_ENDPOINT_URL", "WORK_DIR"):
        assert f"MUSCLE_{name}" in compose, name
