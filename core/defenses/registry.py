"""The defenses a run can train with: one `DefenseSpec` per method, registered by its own module.

Modelled on PEFT's ``register_peft_method``: every module in `core.defenses.kinds` calls
`register_defense` at import, and everything that needs the list of methods reads it from here:
``core.config.Method`` / ``METHODS`` / ``METHOD_PARTS`` / ``PROFILE_METHOD_VALUES``, `apply_defense`,
the export functions and the training loop (gradient alignment). Adding a defense is one new module in
``core/defenses/kinds/`` (plus its tests); docs/engine-internals.md has the recipe.

This module and the kind modules import no torch at import time (``core.config`` reads them, and the API
imports ``core.config``): a spec's ``install`` imports its building blocks when it runs.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Trains = Literal["full", "lora", "adapter", "prefix"]

# install(model, config, family, info) -> the model to train. Runs with every base weight frozen and the
# defense's RNG seeded; it adds (and unfreezes) the method's own parts and records them on `info`
# (a `core.defenses.methods.DefenseInfo`). It may return a wrapper (PEFT).
Install = Callable[[Any, Any, str, Any], Any]


@dataclass(frozen=True)
class DefenseSpec:
    """What one training method is; `core.defenses.methods.apply_defense` and the exports act on it."""

    name: str
    """The ``method`` value (``TrainConfig.method``, ``--method``, the API's ``method`` setting)."""
    order: int
    """Position in the method lists (CLI choices, the settings schema); built-ins use 10, 20, ..."""
    trains: Trains
    """What trains: full = every weight, head included (no install); otherwise the base is frozen and
    ``install`` adds the trainable parts (LoRA, bottleneck adapters, a PEFT prefix)."""
    summary: str
    """One line for the docs: what is trainable."""
    ga: bool = False
    """Gradient alignment against the clean aux rows applies (the loop then needs aux rows)."""
    mslr: bool = False
    """The multi-scale low-rank module replaces the penultimate linear layer."""
    mergeable: bool = True
    """`export_merged` writes a plain transformers model; False: adapter-only export (non-linear parts)."""
    install: Install | None = None
    """Adds the method's trainable parts (required unless ``trains == "full"``)."""
    profile_values: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    """Settings a profile gives this method before the caller's overrides: {"default": {"lr": 5e-4}}."""

    @property
    def lora(self) -> bool:
        return self.trains == "lora"

    @property
    def exports_adapter(self) -> bool:
        """`export_adapter` writes the trained parts alone (every method but full fine-tuning)."""
        return self.trains != "full"

    @property
    def parts(self) -> dict[str, bool]:
        """The building blocks it switches on (docs/reference-implementation.md §2.4), as ``TrainConfig.parts``."""
        return {"lora": self.lora, "mslr": self.mslr, "ga": self.ga}


_REGISTRY: dict[str, DefenseSpec] = {}
_LOADED = False


def register_defense(spec: DefenseSpec) -> DefenseSpec:
    """Add a method; a name registered twice is an error (two modules claiming one method)."""
    if spec.name in _REGISTRY:
        raise ValueError(f"defense {spec.name!r} is already registered")
    if spec.trains != "full" and spec.install is None:
        raise ValueError(f"defense {spec.name!r} trains {spec.trains!r} parts but has no install")
    _REGISTRY[spec.name] = spec
    return spec


def _load_builtin() -> None:
    """Import every module of `core.defenses.kinds` once (each registers its defenses)."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    import core.defenses.kinds as kinds

    for info in sorted(pkgutil.iter_modules(kinds.__path__), key=lambda m: m.name):
        importlib.import_module(f"{kinds.__name__}.{info.name}")


def defenses() -> list[DefenseSpec]:
    """Every registered defense, in ``order``."""
    _load_builtin()
    return sorted(_REGISTRY.values(), key=lambda s: (s.order, s.name))


def defense_names() -> tuple[str, ...]:
    return tuple(s.name for s in defenses())


def get_defense(name: str) -> DefenseSpec:
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of {list(defense_names())}") from None
