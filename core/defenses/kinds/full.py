"""Full fine-tuning: every weight trains, the classifier included (``vanilla``), optionally with gradient
alignment (``ga-only``, the paper's OnlyGA ablation). No install step; the merged export is the model."""

from __future__ import annotations

from core.defenses.registry import DefenseSpec, register_defense

register_defense(DefenseSpec(
    name="vanilla", order=20, trains="full", summary="everything"))
register_defense(DefenseSpec(
    name="ga-only", order=80, trains="full", ga=True,
    summary="everything (full fine-tuning, classifier included)",
    profile_values={"default": {"epochs": 10, "ga_reference": "kept"}}))
