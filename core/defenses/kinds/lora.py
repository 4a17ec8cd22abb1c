"""Plain PEFT LoRA on the attention query/value projections (the ``lora`` baseline)."""

from __future__ import annotations

from typing import Any

from core.defenses.registry import DefenseSpec, register_defense

# Low-rank methods take a larger lr under the `default` profile for their smaller updates.
LOW_RANK_DEFAULTS = {"default": {"lr": 5e-4, "epochs": 10}}


def install(model: Any, config: Any, fam: str, info: Any) -> Any:
    from core.defenses.parts import install_lora

    return install_lora(model, config, fam, info)


register_defense(DefenseSpec(
    name="lora", order=30, trains="lora", install=install, summary="LoRA",
    profile_values=LOW_RANK_DEFAULTS))
