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


def render_model_card(metrics: dict[str, Any]) -> str:
    cfg = metrics["config"]
    asr_rows = "\n".join(f"| {name} | {_pct(v)} |" for name, v in metrics["asr"].items()) or "| (none) | |"
    hashes = "\n".join(f"- {role}: `{digest}`" for role, digest in metrics["data_sha256"].items())
    versions = ", ".join(f"{k} {v}" for k, v in metrics["versions"].items())
    return f"""---
library_name: transformers
pipeline_tag: text-classification
tags: [backdoor-defense, data-screening, muscle-lora]
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

The fully resolved configuration and per-epoch history are in `metrics.json` next to this folder.
"""


def write_model_card(path: Path, metrics: dict[str, Any]) -> None:
    path.write_text(render_model_card(metrics))
