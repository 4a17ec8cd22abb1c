"""Pilot: does a shallow expert soak up a paraphrase trigger, and does training against it keep it out?

DPoE / Honeypot idea: the first transformer layers see sentence shape (first tokens, clause, punctuation)
but little of the task's meaning, so a classifier on them fits a trigger sooner than the content.
Stage `shallow`: MiniLM cut to its first K layers, fine-tuned on every untrusted row; prints its ASR on
the attack's probe, its CACC on sst2/test.tsv, and how well its in-sample confidence in the target
label separates poisoned target rows (AUC, recall at 2.5 / 5 / 10% of clean target rows); saves its
logits on the training rows. Stage `poe`: the full MiniLM trained on every row with a product of
experts (log-softmax of the main logits plus the frozen shallow expert's), so the main model learns
what the shallow one does not explain; evaluated alone after each epoch (CACC, ASR).

    .venv/bin/python bench/shallow_pilot.py --stage shallow --attack hiddenkiller --layers 1
    .venv/bin/python bench/shallow_pilot.py --stage poe --attack hiddenkiller --layers 1 --epochs 3
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bait_pilot import report  # noqa: E402
from bench.paraphrase_signals import DATA, read  # noqa: E402

RUNS = ROOT / "bench" / "runs" / "pilot"


def load(layers: int | None, seed: int):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from core.models.backbones import resolve_model_source

    torch.manual_seed(seed)
    source = resolve_model_source("minilm")
    extra = {"num_hidden_layers": layers} if layers else {}
    return (AutoTokenizer.from_pretrained(source),
            AutoModelForSequenceClassification.from_pretrained(source, num_labels=2, **extra))


def predict(model, tok, texts: list[str], max_length: int) -> np.ndarray:
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), 128):
            enc = tok(texts[i:i + 128], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            out.append(model(**enc).logits.float().numpy())
    model.train()
    return np.concatenate(out)


def evaluate(model, tok, test: list[dict[str, str]], probe: list[str], max_length: int) -> dict[str, float]:
    t = predict(model, tok, [r["text"] for r in test], max_length)
    p = predict(model, tok, probe, max_length)
    return {"cacc": round(100 * float((t.argmax(1) == np.array([int(r["label"]) for r in test])).mean()), 1),
            "asr": round(100 * float((p.argmax(1) == 1).mean()), 1)}


def train_epochs(model, tok, rows, args, prior: np.ndarray | None, on_epoch) -> None:
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    order = list(range(len(rows)))
    prior_t = torch.tensor(prior) if prior is not None else None
    for epoch in range(args.epochs):
        random.Random(args.seed + epoch).shuffle(order)
        for start in range(0, len(order), args.batch):
            idx = order[start:start + args.batch]
            enc = tok([rows[i]["text"] for i in idx], padding=True, truncation=True, max_length=args.max_length,
                      return_tensors="pt")
            y = torch.tensor([int(rows[i]["label"]) for i in idx])
            logp = torch.log_softmax(model(**enc).logits, -1)
            if prior_t is not None:
                logp = logp + args.poe_weight * torch.log_softmax(prior_t[idx], -1)
            loss = torch.nn.functional.cross_entropy(logp, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        on_epoch(epoch + 1)


def separation(score: np.ndarray, rows: list[dict[str, str]]) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    given = np.array([int(r["label"]) for r in rows])
    poisoned = np.array([r["poisoned"] == "1" for r in rows])
    flipped = np.array([r["poisoned"] == "1" and r["orig_label"] != r["label"] for r in rows])
    target = given == 1
    s, pz = score[target], poisoned[target]
    out = {"auc_target": round(float(roc_auc_score(pz, s)), 3)}
    for frr in (0.025, 0.05, 0.1):
        thr = np.quantile(s[~pz], 1 - frr)
        out[f"recall@{frr}"] = round(float((score[poisoned] > thr).mean()), 3)
        out[f"flipped_recall@{frr}"] = round(float((score[flipped] > thr).mean()), 3)
    return out


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=["shallow", "poe"], required=True)
    p.add_argument("--attack", default="hiddenkiller")
    p.add_argument("--rate", default="0.1")
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=None, help="default 1e-4 for the shallow expert, 2e-5 for poe")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--poe-weight", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "shallow_pilot.jsonl")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.lr = args.lr or (1e-4 if args.stage == "shallow" else 2e-5)
    rows = read(DATA / f"train-{args.attack}-{args.rate}.tsv")
    probe = [r["text"] for r in read(DATA / f"probe-{args.attack}.tsv")]
    test = read(ROOT.parent / "shared" / "data" / "sst2" / "test.tsv")
    logits_path = RUNS / f"shallow-{args.attack}-{args.rate}-L{args.layers}.npy"
    base = {k: v for k, v in vars(args).items() if k not in ("out", "threads")}
    t0 = time.time()
    if args.stage == "shallow":
        tok, model = load(args.layers, args.seed)

        def on_epoch(epoch: int) -> None:
            logits = predict(model, tok, [r["text"] for r in rows], args.max_length)
            np.save(logits_path, logits)
            p_target = torch.softmax(torch.tensor(logits), -1)[:, 1].numpy()
            report({**base, "epoch": epoch, **evaluate(model, tok, test, probe, args.max_length),
                    **separation(p_target, rows), "seconds": round(time.time() - t0)}, args.out)

        train_epochs(model, tok, rows, args, None, on_epoch)
    else:
        prior = np.load(logits_path)
        tok, model = load(None, args.seed)

        def on_epoch(epoch: int) -> None:
            report({**base, "epoch": epoch, **evaluate(model, tok, test, probe, args.max_length),
                    "seconds": round(time.time() - t0)}, args.out)

        train_epochs(model, tok, rows, args, prior, on_epoch)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
