"""MuScleLoRA (LoRA + the multi-scale low-rank module + gradient alignment) and its two ablations."""

from __future__ import annotations

from core.defenses.kinds.lora import LOW_RANK_DEFAULTS, install
from core.defenses.registry import DefenseSpec, register_defense

# Under `default`, alignment draws its clean batch from the rows the screen kept: the ~100 aux rows are
# fitted within an epoch and their gradient then teaches nothing more (docs/method.md).
ALIGNED_DEFAULTS = {"default": {**LOW_RANK_DEFAULTS["default"], "ga_reference": "kept"}}

register_defense(DefenseSpec(
    name="muscle", order=10, trains="lora", mslr=True, ga=True, install=install,
    summary="LoRA (Q, V) + MSLR L, R on the penultimate linear", profile_values=ALIGNED_DEFAULTS))
register_defense(DefenseSpec(  # the paper's OnlyMSLR
    name="muscle-no-ga", order=60, trains="lora", mslr=True, install=install,
    summary="LoRA + MSLR", profile_values=LOW_RANK_DEFAULTS))
register_defense(DefenseSpec(  # the paper's GA+LoRA
    name="muscle-no-ms", order=70, trains="lora", ga=True, install=install,
    summary="LoRA", profile_values=ALIGNED_DEFAULTS))
