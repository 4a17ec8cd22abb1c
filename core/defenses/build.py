"""One place that turns a loaded backbone into the model a run trains: the defense, then the head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from core.defenses.methods import apply_defense


def defend(model: nn.Module, tokenizer: Any, config: Any, fam: str, aux: Sequence[Any]
           ) -> tuple[nn.Module, dict[str, float] | None]:
    """`apply_defense`, then (head_init="probe") the output layer from a linear probe on the aux rows.
    Returns the model and the probe's fit (None for the random head)."""
    model = apply_defense(model, config, fam)
    if config.head_init != "probe":
        return model, None
    from core.defenses.head_init import init_head_from_probe

    return model, init_head_from_probe(model, tokenizer, aux, max_length=config.max_length)
