"""Per-step training time of several methods on the same backbone and batches, measured side by side.

    .venv/bin/python bench/step_time.py --methods muscle lora vanilla --steps 20 --rounds 3 \
        --out bench/results/step_time_cpu.json

Each round trains every method for `--steps` optimiser steps on the same SST-2 rows (one epoch of
steps*batch rows) through the real training loop, so the numbers include the extra clean
forward/backward of gradient alignment. Rounds interleave the methods so machine load hits all alike.
Reports the median seconds per step over rounds, and for GA methods the share of a step spent in the
alignment maths itself.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "sst2"


def load_rows(path: Path, n: int) -> list:
    from core.data.dataset import load_examples
    from core.data.labels import LabelMap

    label_map = LabelMap.from_labels(["0", "1"])
    return load_examples(path, label_map, role="bench")[:n], label_map


def time_method(method: str, steps: int, args: argparse.Namespace) -> dict:
    import torch

    from core.config import resolve_config
    from core.defenses.methods import apply_defense
    from core.models.backbones import family, load_backbone, resolve_model_source
    from core.training.loop import train

    train_rows, label_map = load_rows(DATA / "train.tsv", steps * args.batch_size)
    aux_rows, _ = load_rows(DATA / "dev.tsv", 96)
    config = resolve_config(args.profile, {"method": method, "epochs": 1, "batch_size": args.batch_size,
                                           "device": args.device, "model": args.model})
    model, tok = load_backbone(resolve_model_source(config.model), label_map, seed=config.seed)
    model = apply_defense(model, config, family(model))
    torch.manual_seed(0)
    outcome = train(model, tok, train_rows, aux_rows, aux_rows[:8], config)
    record = outcome.per_epoch[0]
    train_seconds = record["seconds"] - record["eval_seconds"]  # the epoch-end evaluation is not a step
    out = {"seconds_per_step": train_seconds / record["steps"], "steps": record["steps"]}
    if "ga" in record:
        out["align_share_of_step"] = record["ga"].get("align_share_of_step")
        out["align_seconds"] = record["ga"].get("align_seconds")
        out["ref_pass_seconds"] = record["ga"].get("ref_pass_seconds")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["muscle", "lora", "vanilla"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--profile", default="reference")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import torch

    runs: dict[str, list[dict]] = {m: [] for m in args.methods}
    for r in range(args.rounds):
        for method in args.methods:
            result = time_method(method, args.steps, args)
            runs[method].append(result)
            print(f"round {r + 1} {method}: {result['seconds_per_step']:.3f} s/step", file=sys.stderr)
    summary = {}
    for method, results in runs.items():
        per_step = [x["seconds_per_step"] for x in results]
        summary[method] = {"median_seconds_per_step": statistics.median(per_step), "all": per_step}
        shares = [x["align_share_of_step"] for x in results if x.get("align_share_of_step") is not None]
        if shares:
            summary[method]["median_align_share_of_step"] = statistics.median(shares)
    base = summary.get("vanilla", {}).get("median_seconds_per_step")
    if base:
        for method in summary:
            summary[method]["relative_to_vanilla"] = summary[method]["median_seconds_per_step"] / base
    report = {
        "command": " ".join(sys.argv),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(),
                    "load_average": os.getloadavg(),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "batch_size": args.batch_size, "steps": args.steps, "rounds": args.rounds,
        "model": args.model, "profile": args.profile,
        "summary": summary,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
