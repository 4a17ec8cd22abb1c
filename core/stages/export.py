"""Stage 5, export: write what the job hands out.

Input: the trained `DefendedModel` (its model holds the chosen epoch's weights) and the output folder.
Output: `Exported`, the folders written: `model/` (the defense merged into a plain transformers model;
None when the method cannot be merged) and `adapter/` (the trained parts alone, with the base model's
portable name; None for full fine-tuning).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.interface import ProgressCallback, ProgressEvent
from core.stages.train import DefendedModel


@dataclass(frozen=True)
class Exported:
    model_dir: Path | None
    adapter_dir: Path | None


def export_model(built: DefendedModel, out_dir: Path, emit: ProgressCallback) -> Exported:
    """Export the merged model and the adapter."""
    from core.defenses.methods import export_adapter, export_merged
    from core.model_card import portable_base_name

    model, tokenizer, config = built.model, built.tokenizer, built.config
    emit(ProgressEvent(kind="phase", phase="exporting", message="merging and saving the model"))
    model_dir = export_merged(model, tokenizer, out_dir / "model", built.family)
    adapter_dir = export_adapter(model, out_dir / "adapter", base_name=portable_base_name(config.model))
    return Exported(model_dir=model_dir, adapter_dir=adapter_dir)
