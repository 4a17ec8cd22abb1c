"""The model card written beside the merged weights: what was trained, on what, and how it scored."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _screen_line(screen: dict[str, Any] | None) -> str:
    if not screen:
        return "The training rows were not screened: every row was trained on."
    rules = ", ".join(f"{n} by the {rule} rule" for rule, n in sorted(screen["removed_per_rule"].items()))
    return (f"Before training, the screen removed {screen['rows_removed']} of {screen['rows_in']} training "
            f"rows as likely poisoned{f' ({rules})' if rules else ''}; the model was trained on the other "
            f"{screen['rows_kept']}.")


PACKAGED_BASE = "sentence-transformers/all-MiniLM-L6-v2"  # what `minilm` packages (Apache-2.0)


def base_model(model: str) -> str | None:
    """The hub id the weights started from, when there is one (a local folder has none)."""
    if model.strip().lower() == "minilm":
        return PACKAGED_BASE
    from core.models.availability import is_local_model

    return None if is_local_model(model) else model


def portable_base_name(model: str) -> str:
    """What an adapter names as its base: the hub id, or a local folder's name (never a worker path)."""
    return base_model(model) or Path(model).expanduser().name


def card_metadata(metrics: dict[str, Any]) -> str:
    """The YAML header the Hub reads: base model, license, tags and a model-index with CACC and each ASR."""
    from huggingface_hub import EvalResult, ModelCardData

    task = "text-classification"
    results = [EvalResult(task_type=task, dataset_type="user-provided", dataset_name=metrics["cacc_source"],
                          metric_type="accuracy", metric_value=metrics["cacc"], metric_name="CACC")]
    results += [EvalResult(task_type=task, dataset_type="user-provided", dataset_name=f"attack probe {name}",
                           metric_type="attack_success_rate", metric_value=value, metric_name=f"ASR ({name})")
                for name, value in metrics["asr"].items()]
    base = base_model(metrics["config"]["model"])
    data = ModelCardData(
        base_model=base, library_name="transformers", pipeline_tag=task,
        license="apache-2.0" if base == PACKAGED_BASE else "other",
        tags=["backdoor-defense", "data-screening", "muscle-lora", f"method-{metrics['method']}"],
        model_name=f"muscle-{metrics['method']}", eval_results=results)
    return data.to_yaml()


def render_model_card(metrics: dict[str, Any]) -> str:
    cfg = metrics["config"]
    asr_rows = "\n".join(f"| {name} | {_pct(v)} |" for name, v in metrics["asr"].items()) or "| (none) | |"
    hashes = "\n".join(f"- {role}: `{digest}`" for role, digest in metrics["data_sha256"].items())
    versions = ", ".join(f"{k} {v}" for k, v in metrics["versions"].items())
    return f"""---
{card_metadata(metrics)}
---

# Classifier trained with backdoor defense `{metrics['method']}`

Trained by the muscle service from a training file that may have been poisoned. Any low-rank or
multi-scale updates are merged into these weights: load them with
`AutoModelForSequenceClassification.from_pretrained(...)`, no custom code.

{_screen_line(metrics.get("screen"))}

## Results

- Clean accuracy (CACC): **{_pct(metrics['cacc'])}** on {metrics['cacc_source']}
- Best epoch: {metrics['best_epoch']} (chosen by clean accuracy on {metrics['selection_source']})
- Scored: {metrics['scored']}

| attack probe | attack success rate (ASR) |
| --- | --- |
{asr_rows}

ASR is the share of triggered rows whose true label is not the target
(`{metrics['data']['target_label']}`) that the model puts in the target class.

## Provenance

- Base model: {metrics['model_source']} (family {metrics['family']})
- Method: {metrics['method']}, profile {cfg['profile']}, {cfg['epochs']} epochs, lr {cfg['lr']},
  batch {cfg['batch_size']}, seed {metrics['seed']}
- Versions: {versions}
- Input files (sha256):
{hashes}

The fully resolved configuration, the screen's findings and the per-epoch history are in `metrics.json`
in this folder; the numbers above can be recomputed from these weights and the files named by their hashes.
"""


def write_model_card(folder: Path, metrics: dict[str, Any]) -> None:
    """README.md (the card) and metrics.json, inside the model folder, so the download carries both."""
    import json

    (folder / "README.md").write_text(render_model_card(metrics))
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
