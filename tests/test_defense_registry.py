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
    table = {  # (lora, mslr, ga) as in docs/reference-implementation.md §2.4
        "muscle": (True, True, True), "muscle-no-ga": (True, True, False), "muscle-no-ms": (True, False, True),
        "ga-only": (False, False, True), "lora": (True, False, False), "vanilla": (False, False, False),
        "adapter": (False, False, False), "prefix": (False, False, False)}
    assert {m: (p["lora"], p["mslr"], p["ga"]) for m, p in METHOD_PARTS.items()} == table
    assert {s.name for s in defenses() if s.trains == "full"} == {"vanilla", "ga-only"}
    assert {s.name for s in defenses() if not s.mergeable} == {"adapter", "prefix"}
    assert {s.name for s in defenses() if not s.exports_adapter} == {"vanilla", "ga-only"}


def test_profile_values_per_method() -> None:
    low_rank, kept = {"lr": 5e-4, "epochs": 10}, {"ga_reference": "kept"}
    assert PROFILE_METHOD_VALUES == {"reference": {}, "default": {
        "muscle": low_rank | kept, "muscle-no-ga": low_rank, "muscle-no-ms": low_rank | kept, "lora": low_rank,
        "ga-only": {"epochs": 10} | kept, "adapter": {"epochs": 10}, "prefix": {"epochs": 10}}}


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


NEW_DEFENSE = '''
from core.defenses.registry import DefenseSpec, register_defense


def install(model, config, fam, info):
    from core.defenses.parts import install_lora

    return install_lora(model, config.model_copy(update={"lora_targets": ["query", "key", "value"]}), fam, info)


register_defense(DefenseSpec(name="lora-qkv", order=90, trains="lora", install=install, summary="LoRA on Q, K, V",
                             profile_values={"default": {"lr": 1e-3}}))
'''

USE_IT = '''
import sys
import core.defenses.kinds as kinds

kinds.__path__.append(sys.argv[1])  # as if the file were in core/defenses/kinds/
from core.cli import build_parser
from core.config import METHODS, resolve_config
from core.defenses.methods import apply_defense, export_adapter
from core.models.backbones import load_backbone
from tests.tiny_models import TinyLabels

assert METHODS[-1] == "lora-qkv", METHODS
args = build_parser().parse_args(["train", "--train", "t", "--aux", "a", "--out", "o", "--method", "lora-qkv"])
config = resolve_config("default", {"method": args.method})
assert config.lr == 1e-3 and config.parts == {"lora": True, "mslr": False, "ga": False}
model, _ = load_backbone(sys.argv[2], TinyLabels(2), seed=0)
model = apply_defense(model, config, "bert")
trained = {n for n, p in model.named_parameters() if p.requires_grad}
assert any(".key.lora_A" in n for n in trained) and all("lora_" in n for n in trained), trained
assert export_adapter(model, sys.argv[3]) is not None
'''


def test_a_new_defense_is_one_file(tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "kind").mkdir()
    (tmp_path / "kind" / "lora_qkv.py").write_text(NEW_DEFENSE)
    subprocess.run([sys.executable, "-c", USE_IT, str(tmp_path / "kind"), str(tiny("bert")), str(tmp_path / "ad")],
                   check=True, cwd=ROOT)
