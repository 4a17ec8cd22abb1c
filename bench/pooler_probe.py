"""How much sentence information reaches the head of MiniLM at step 0? A linear probe per feature.

    .venv/bin/python bench/pooler_probe.py --out bench/results/pooler_probe.json

Fits a logistic regression on the 96 clean aux rows (the benchmark's aux split: 96 random SST-2 dev
rows, seed 42) and scores it on the other dev rows, for features taken from the frozen backbone:
the last layer's [CLS] state, the pooler output (what BertForSequenceClassification's head sees), the
pooler output after the reference MSLR module (random non-zero init), and the mean of the last layer
over tokens (how all-MiniLM-L6-v2 was trained: sentence-transformers mean pooling). It also reports the
share of saturated pooler units (|tanh| > 0.99). Evidence for the efficacy study (issue: the default
profile on MiniLM).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT.parent / "shared" / "data" / "sst2" / "dev.tsv"


@torch.no_grad()
def features(model, tokenizer, texts: list[str]) -> dict[str, torch.Tensor]:
    bert = model.bert
    out: dict[str, list[torch.Tensor]] = {"cls": [], "mean": [], "pooler": [], "pooler+mslr": []}
    for text in texts:
        enc = tokenizer([text], return_tensors="pt", truncation=True, max_length=128)
        hidden = bert(**enc).last_hidden_state  # pooler (if wrapped by MSLR) runs too, ignore it here
        cls = hidden[:, 0]
        out["cls"].append(cls)
        out["mean"].append((hidden * enc["attention_mask"][..., None]).sum(1) / enc["attention_mask"].sum())
        out["pooler"].append(torch.tanh(bert.pooler.dense.base(cls)))
        out["pooler+mslr"].append(torch.tanh(bert.pooler.dense(cls)))
    return {k: torch.cat(v) for k, v in out.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from core.config import resolve_config
    from core.data.dataset import load_examples
    from core.data.labels import LabelMap
    from core.defenses.head_init import fit_linear_probe
    from core.defenses.methods import apply_defense
    from core.models.backbones import load_backbone, resolve_model_source, unwrap

    label_map = LabelMap.from_labels(["0", "1"])
    dev = load_examples(DEV, label_map, role="dev")
    order = list(range(len(dev)))
    random.Random(42).shuffle(order)
    aux, held = [dev[i] for i in order[:96]], [dev[i] for i in order[96:]]
    model, tok = load_backbone(resolve_model_source("minilm"), label_map, seed=42)
    model = unwrap(apply_defense(model, resolve_config("reference", {"method": "muscle"}), "bert")).eval()
    started = time.time()
    f_aux, f_held = features(model, tok, [r.text for r in aux]), features(model, tok, [r.text for r in held])
    y_aux, y_held = [r.label for r in aux], torch.tensor([r.label for r in held])
    results = {}
    for name in f_aux:
        w, b = fit_linear_probe(f_aux[name], y_aux, 2, l2=1e-3)
        acc = (torch.nn.functional.linear(f_held[name].double(), w, b).argmax(-1) == y_held).double().mean()
        results[name] = {"held_out_accuracy": round(float(acc), 4),
                         "std_across_rows": round(float(f_held[name].std(0).mean()), 4)}
        if name.startswith("pooler"):
            results[name]["saturated_share"] = round(float((f_held[name].abs() > 0.99).double().mean()), 4)
    report = {"command": " ".join(sys.argv), "aux_rows": len(aux), "held_out_rows": len(held),
              "seconds": round(time.time() - started, 1), "features": results}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
