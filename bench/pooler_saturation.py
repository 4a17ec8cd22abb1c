"""Why default muscle stops learning on full SST-2: pooler saturation in a run's checkpoint.

    .venv/bin/python bench/pooler_saturation.py RUN_DIR [RUN_DIR ...] --out bench/results/pooler_saturation.json

RUN_DIR is a `muscle train --method muscle --profile default` output folder of a grid run on sst2 (its
checkpoints/last.safetensors). For the aux rows (the grid's 96) and 256 of the select rows, at step 0 and at the
checkpoint: the share of pooler units whose tanh input is beyond +-9 (float32 tanh rounds to +-1 there,
so its derivative is exactly 0), the loss, the accuracy and the mean top probability; then the clean
gradient of the trainable tensors in training mode (dropout on, as the loop computes it), on all aux
rows at once and on every fourth aux row alone; and the least loss the frozen head can reach.
Evidence for bench/notes/muscle-efficacy-study.md finding 8.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "runs" / "data" / "sst2"
SATURATED = 9.0  # float32: tanh(x) == 1.0 for x > ~9.01


def measure(model: Any, tok: Any, texts: list[str], labels: list[int], pre: dict[str, torch.Tensor]
            ) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        enc = tok(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
        logits = model(**enc).logits
    y = torch.tensor(labels)
    x = pre["x"]
    return {"saturated_share": float((x.abs() > SATURATED).float().mean()),
            "median_abs_pre_activation": float(x.abs().median()),
            "loss": float(F.cross_entropy(logits, y)), "accuracy": float((logits.argmax(-1) == y).float().mean()),
            "mean_top_probability": float(logits.softmax(-1).max(-1).values.mean())}


def head_loss_floor(head: torch.nn.Linear) -> list[float]:
    """Per class, the least cross-entropy the frozen random head can give: every pooler output at +-1
    with the sign that widens the logit gap (two classes)."""
    w, b = head.weight.detach(), head.bias.detach()
    reach = float((w[1] - w[0]).abs().sum())
    gaps = [reach - float(b[1] - b[0]), reach + float(b[1] - b[0])]  # class 0, class 1
    return [float(F.softplus(torch.tensor(-g))) for g in gaps]


def clean_gradient(model: Any, tok: Any, texts: list[str], labels: list[int]) -> dict[str, Any]:
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()

    def norms(idx: list[int]) -> list[float]:
        enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=128, return_tensors="pt")
        loss = F.cross_entropy(model(**enc).logits, torch.tensor([labels[i] for i in idx]))
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        return [0.0 if g is None else float(g.norm()) for g in grads]

    whole = norms(list(range(len(texts))))
    singles = [max(norms([i])) for i in range(0, len(texts), 4)]
    return {"tensors": len(params), "whole_aux_zero_tensors": sum(v == 0.0 for v in whole),
            "whole_aux_max_norm": max(whole), "single_rows": len(singles),
            "single_rows_exactly_zero": sum(v == 0.0 for v in singles)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)  # dropout in the gradient pass

    sys.path.insert(0, str(ROOT))
    from core.config import resolve_config
    from core.data.dataset import load_examples
    from core.data.labels import LabelMap
    from core.defenses.methods import apply_defense
    from core.models.backbones import load_backbone, unwrap
    from core.training.checkpoint_file import load_checkpoint
    from core.training.loop import load_snapshot

    cfg = resolve_config("default").model_copy(update={"method": "muscle", "device": "cpu"})
    label_map = LabelMap.from_labels(["0", "1"])
    model, tok = load_backbone("minilm", label_map, seed=cfg.seed)
    model = apply_defense(model, cfg, "bert")
    pre: dict[str, torch.Tensor] = {}
    unwrap(model).bert.pooler.dense.register_forward_hook(lambda m, i, o: pre.__setitem__("x", o.detach()))
    examples = {"aux": load_examples(DATA / "aux96-s42.tsv", label_map, role="aux"),
                "select": load_examples(DATA / "select-s42.tsv", label_map, role="select")[:256]}
    sets = {name: ([e.text for e in rows], [e.label for e in rows]) for name, rows in examples.items()}
    start = time.time()
    result: dict[str, Any] = {"step0": {name: measure(model, tok, *rows, pre) for name, rows in sets.items()},
                              "head_loss_floor": head_loss_floor(unwrap(model).classifier)}
    for run in args.runs:
        ck = load_checkpoint(run / "checkpoints" / "last.safetensors")
        load_snapshot(model, ck["model"])
        result[str(run.relative_to(ROOT) if run.is_absolute() else run)] = {
            "epoch": ck["epoch"], **{name: measure(model, tok, *rows, pre) for name, rows in sets.items()},
            "clean_gradient": clean_gradient(model, tok, *sets["aux"])}
    result["seconds"] = time.time() - start
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
