"""Profiles: reference is the authors' settings; default applies per-method values before overrides."""

from __future__ import annotations

import pytest

from core.config import DEFAULT, PROFILE_METHOD_VALUES, REFERENCE, resolve_config


def test_reference_is_the_authors_settings_for_every_method() -> None:
    for method in ("muscle", "lora", "vanilla"):
        cfg = resolve_config("reference", {"method": method})
        assert cfg.lr == 2e-5 and cfg.mslr_init == "kaiming" and cfg.ga_gate_loss == 0.4 and cfg.mu_max == 0.1


def test_default_keeps_full_fine_tuning_at_the_authors_lr() -> None:
    # the default job screens the rows, then fine-tunes fully for 3 epochs at the authors' lr
    default = resolve_config("default")
    assert (default.method, default.epochs, default.lr, default.screen) == ("vanilla", 3, REFERENCE["lr"], True)
    assert resolve_config("reference").screen is False  # the authors train on every row
    assert resolve_config("default", {"method": "muscle"}).lr == DEFAULT["lr"]
    assert resolve_config("default", {"method": "muscle"}).epochs == REFERENCE["epochs"]
    # the authors keep the raw gradient where the clean one vanished; the default drops it (finding 7)
    assert (resolve_config("reference").ga_no_direction, resolve_config("default").ga_no_direction) == (
        "keep_raw", "skip")
    assert (resolve_config("reference").mu_max, resolve_config("default").mu_max) == (0.1, 0.0)
    for method in PROFILE_METHOD_VALUES["default"]:
        assert resolve_config("default", {"method": method}).lr == REFERENCE["lr"]


def test_overrides_beat_per_method_values() -> None:
    assert resolve_config("default", {"method": "vanilla", "lr": 1e-4}).lr == 1e-4
    assert resolve_config("default", {"ga_gate_loss": None}).ga_gate_loss is None  # None is a real value


def test_unknown_profile_and_setting_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown profile"):
        resolve_config("fast")
    with pytest.raises(ValueError, match="extra"):
        resolve_config("default", {"lr_typo": 1.0})


def test_target_label_may_be_an_integer() -> None:
    assert resolve_config("default", {"target_label": 1}).target_label == "1"
    assert resolve_config("default", {"target_label": "pos"}).target_label == "pos"
