"""PEFT prefix tuning: trained virtual key/values (the ``prefix`` baseline; not for DistilBERT).
Not mergeable: the run exports the adapter folder only."""

from __future__ import annotations

from typing import Any

from core.defenses.registry import DefenseSpec, register_defense


def install(model: Any, config: Any, fam: str, info: Any) -> Any:
    from core.defenses.parts import install_prefix

    return install_prefix(model, config, fam, info)


register_defense(DefenseSpec(
    name="prefix", order=50, trains="prefix", mergeable=False, install=install,
    summary="PEFT prefix-tuning virtual key/values",
    profile_values={"default": {"epochs": 10}}))
