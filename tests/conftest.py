"""Fixtures shared by the engine tests: one thread per test process, tiny random models built once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.tiny_models import make_tiny_model, shared_root, single_thread


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Tiny models run faster on one thread, and two test processes then do not fight over 2 cores.
    with single_thread():
        yield


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """`tiny("bert")` -> a saved tiny random checkpoint of that family (built once per session)."""
    root = shared_root(tmp_path_factory)
    return lambda fam, num_labels=2: make_tiny_model(fam, root, num_labels)
