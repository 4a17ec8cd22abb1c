"""Pilot: does destroying a sentence's structure take a trained model's target prediction away?

A syntactic or style trigger lives in word order and phrasing; a clean row's label lives mostly in its
words. A model that learned the trigger calls a flipped poisoned row positive because of its structure,
so shuffling the row's words (or dropping some) should take that prediction away, while a clean
positive row keeps its sentiment words and its prediction. Score per target-labelled row:
p(target | text) - mean p(target | k perturbed copies). Printed, per perturbation: AUC among the
target-labelled rows against the `poisoned` column, recall at 1 / 2.5 / 5% of clean target rows, the
same for the flipped rows only, and where the aux rows of the target class fall (the clean null a
product would threshold on).

Input: models saved by `bench/bait_pilot.py --dynamics --save-models` (bench/runs/pilot/model-*).

    .venv/bin/python bench/shuffle_consistency.py --attack hiddenkiller --rate 0.1 --epochs 1,2,3
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.paraphrase_signals import DATA, read  # noqa: E402

FRRS = (0.01, 0.025, 0.05)


def shuffled(text: str, rng: random.Random) -> str:
    words = text.split()
    rng.shuffle(words)
    return " ".join(words)


def dropped(text: str, rng: random.Random, keep: float = 0.7) -> str:
    words = text.split()
    kept = [w for w in words if rng.random() < keep]
    return " ".join(kept or words[:1])


PERTURB = {"shuffle": shuffled, "drop30": dropped}


def p_target(model, tok, texts: list[str], target: int) -> np.ndarray:
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(texts), 256):
            enc = tok(texts[i:i + 256], padding=True, truncation=True, max_length=64, return_tensors="pt")
            out.append(torch.softmax(model(**enc).logits, -1)[:, target].numpy())
    return np.concatenate(out)


def recall_at(score: np.ndarray, positive: np.ndarray, clean: np.ndarray) -> list[float]:
    return [round(float((score[positive] > np.quantile(score[clean], 1 - f)).mean()), 3) for f in FRRS]


def main(argv: list[str] | None = None) -> int:
    import torch
    from sklearn.metrics import roc_auc_score
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--attack", required=True)
    p.add_argument("--rate", default="0.1")
    p.add_argument("--epochs", default="1,2,3")
    p.add_argument("--copies", type=int, default=4)
    p.add_argument("--target", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "shuffle_consistency.jsonl")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = read(DATA / f"train-{args.attack}-{args.rate}.tsv")
    aux = [r for r in read(DATA / "aux.tsv") if int(r["label"]) == args.target]
    idx = [i for i, r in enumerate(rows) if int(r["label"]) == args.target]
    texts = [rows[i]["text"] for i in idx]
    poisoned = np.array([rows[i]["poisoned"] == "1" for i in idx])
    flipped = np.array([rows[i]["poisoned"] == "1" and int(rows[i].get("orig_label", args.target)) != args.target
                        for i in idx])
    clean = ~poisoned
    for epoch in args.epochs.split(","):
        t0 = time.time()
        folder = ROOT / "bench" / "runs" / "pilot" / f"model-{args.attack}-{args.rate}-e{epoch}"
        tok = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
        base = p_target(model, tok, texts, args.target)
        aux_base = p_target(model, tok, [r["text"] for r in aux], args.target)
        for name, fn in PERTURB.items():
            rng = random.Random(0)
            pert = np.mean([p_target(model, tok, [fn(t, rng) for t in texts], args.target)
                            for _ in range(args.copies)], axis=0)
            aux_pert = np.mean([p_target(model, tok, [fn(r["text"], rng) for r in aux], args.target)
                                for _ in range(args.copies)], axis=0)
            score, aux_score = base - pert, aux_base - aux_pert
            result = {
                "attack": args.attack, "rate": args.rate, "epoch": int(epoch), "perturbation": name,
                "target_rows": len(idx), "poisoned": int(poisoned.sum()), "flipped": int(flipped.sum()),
                "auc": round(float(roc_auc_score(poisoned, score)), 3),
                "recall_at_clean": recall_at(score, poisoned, clean),
                "auc_flipped": round(float(roc_auc_score(flipped[flipped | clean], score[flipped | clean])), 3)
                if flipped.any() else None,
                "recall_flipped_at_clean": recall_at(score, flipped, clean) if flipped.any() else None,
                "clean_quantiles_95_99": [round(float(q), 3) for q in np.quantile(score[clean], [0.95, 0.99])],
                "aux_max": round(float(aux_score.max()), 3), "aux_n": len(aux),
                "seconds": round(time.time() - t0),
            }
            print(json.dumps(result), flush=True)
            with open(args.out, "a") as fh:
                fh.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
