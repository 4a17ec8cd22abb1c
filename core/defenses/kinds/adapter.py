"""Bottleneck adapters after each FFN output (the ``adapter`` baseline; `core.defenses.adapter`).
Non-linear, so not mergeable: the run exports the adapter folder only."""

from __future__ import annotations

from typing import Any

from core.defenses.registry import DefenseSpec, register_defense


def install(model: Any, config: Any, fam: str, info: Any) -> Any:
    from core.defenses.parts import install_adapter

    return install_adapter(model, config, fam, info)


register_defense(DefenseSpec(
    name="adapter", order=40, trains="adapter", mergeable=False, install=install,
    summary="bottleneck adapters after each FFN output (`adapter.py`)",
    profile_values={"default": {"epochs": 10}}))
