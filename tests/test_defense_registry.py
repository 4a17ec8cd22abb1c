"""The defense registry: every method comes from one registered spec, and the lists derive from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from core.config import METHOD_PARTS, METHODS, PROFILE_METHOD_VALUES, TrainConfig
from core.defenses import registry
from core.defenses.registry import DefenseSpec, defense_names, defenses, get_defense, register_defense

ROOT = Path(__file__).resolve().parents[1]


def test_the_built_in_methods_in_their_order() -> None:
    assert METHODS == ("muscle", "vanilla", "lora", "adapter", "prefix", "muscle-no-ga", "muscle-no-ms",
                       "ga-only")
    assert defense_names() == METHODS
    assert TrainConfig.model_json_schema()["properties"]["method"]["enum"] == list(METHODS)


def test_the_parts_each_method_switches_on() -> None:
    table = {  # (lora, mslr, ga) as in reference §2.4
        "muscle": (True, True, True), "muscle-no-ga": (True, True, False), "muscle-no-ms": (True, False, True),
        "ga-only": (False, False, True), "lora": (True, False, False), "vanilla": (False, False, False),
        "adapter": (False, False, False), "prefix": (False, False, False)}
    assert {m: (p["lora"], p["mslr"], p["ga"]) for m, p in METHOD_PARTS.items()} == table
    assert {s.name for s in defenses() if s.trains == "full"} == {"vanilla", "ga-only"}
    assert {s.name for s in defenses() if not s.mergeable} == {"adapter", "prefix"}
    assert {s.name for s in defenses() if not s.exports_adapter} == {"vanilla", "ga-only"}


def test_profile_values_per_method() -> None:
    low_rank = {"lr": 5e-4, "epochs": 10}
    assert PROFILE_METHOD_VALUES == {"reference": {}, "default": {
        "muscle": low_rank, "muscle-no-ga": low_rank, "muscle-no-ms": low_rank, "lora": low_rank,
        "ga-only": {"epochs": 10}, "adapter": {"epochs": 10}, "prefix": {"epochs": 10}}}


def test_register_refuses_a_second_spec_of_a_name_and_a_missing_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    with pytest.raises(ValueError, match="already registered"):
        register_defense(DefenseSpec(name="lora", order=99, trains="full", summary="x"))
    with pytest.raises(ValueError, match="no install"):
        register_defense(DefenseSpec(name="new", order=99, trains="lora", summary="x"))
    spec = register_defense(DefenseSpec(name="new", order=99, trains="full", ga=True, summary="x"))
    assert get_defense("new") is spec and defense_names()[-1] == "new"
    with pytest.raises(ValueError, match="unknown method"):
        get_defense("nope")


def test_reading_the_registry_imports_no_torch() -> None:
    code = "import sys, core.config; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
