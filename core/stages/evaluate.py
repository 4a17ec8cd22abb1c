"""Stage 6, evaluate: score what is handed out, as a user holding the artifacts would.

`score_export` takes the `DefendedModel`, the `Exported` folders and the `PreparedData`; it loads the
merged folder with plain transformers (the model in memory when the method cannot be merged) and returns
`Scored`: the folders, CACC on the eval rows, the ASR per probe, the ASR floor and what was scored.
`evaluate_classifier` (model, tokenizer, rows, probes, target, config -> CACC, ASR per probe, floor) is
the scoring itself, which `muscle evaluate` uses too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import TrainConfig
from core.data.dataset import Example
from core.interface import ProgressCallback, ProgressEvent
from core.prepared import PreparedData
from core.stages.export import Exported
from core.stages.train import DefendedModel


@dataclass(frozen=True)
class Scored:
    model_dir: Path | None
    adapter_dir: Path | None
    cacc: float
    asr: dict[str, float]
    floor: float | None
    scored: str  # what the figures were computed on


def score_export(built: DefendedModel, exported: Exported, data: PreparedData, emit: ProgressCallback) -> Scored:
    """Score what is handed out (the merged folder, loaded as a user would; the model in memory when it
    cannot be merged)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from core.models.backbones import quiet_transformers

    model_dir = exported.model_dir
    emit(ProgressEvent(kind="phase", phase="evaluating", message="evaluating the exported model"))
    if model_dir is not None:
        with quiet_transformers():
            eval_model = AutoModelForSequenceClassification.from_pretrained(model_dir)
            eval_tok = AutoTokenizer.from_pretrained(model_dir)
        scored = "exported merged model (model/)"
    else:
        eval_model, eval_tok = built.model, built.tokenizer
        scored = "trained model in memory (method cannot be merged; load adapter/ with the base model)"
    cacc, asr, floor = evaluate_classifier(eval_model, eval_tok, data.eval, data.probes, data.target, built.config)
    return Scored(model_dir=model_dir, adapter_dir=exported.adapter_dir, cacc=cacc, asr=asr, floor=floor,
                  scored=scored)


def evaluate_classifier(model: Any, tokenizer: Any, eval_rows: list[Example],
                        probes: dict[str, list[Example]], target: int, config: TrainConfig,
                        ) -> tuple[float, dict[str, float], float | None]:
    """CACC on every eval row; ASR per probe over rows whose true label is not the target; and the
    floor an ASR must be read against: the share of clean non-target eval rows already put in the
    target class (None when every eval row has the target label)."""
    from core.metrics import accuracy, attack_success_rate
    from core.training.predict import predict_logits

    def preds(rows: list[Example]) -> list[int]:
        logits = predict_logits(model, tokenizer, [r.text for r in rows], config.eval_batch_size,
                                config.max_length, device=config.device)
        return logits.argmax(-1).tolist()

    eval_preds = preds(eval_rows)
    labels = [r.label for r in eval_rows]
    cacc = accuracy(eval_preds, labels)
    floor = (attack_success_rate(eval_preds, labels, target) if any(y != target for y in labels) else None)
    asr = {name: attack_success_rate(preds(rows), [r.orig_label for r in rows], target)
           for name, rows in probes.items()}
    return cacc, asr, floor
