"""Pilot: do cross-fitted fine-tuned bait models disagree with the labels of paraphrase-trigger rows?

A dirty-label poisoned row says the target label while its content says another. A model that learned
the content but not yet the trigger disagrees with its label. The rows are split in two folds; a fresh
MiniLM is fine-tuned (full, 1 epoch, max_length 64) on one fold and scores the other, so no row is
judged by a model that saw it. Variant `--truncate T` backpropagates only the (1 - T) lowest-loss rows
of each batch (the small-loss trick of noisy-label learning), so rows whose label fights their content
are learned less. Prints, per attack, the AUC of P(not given label) among target-labelled rows against
the `poisoned` column, recall at 2.5 / 5 / 10% of clean target rows removed (all poison and the flipped
part), the aux rows' scores (the clean null the product would calibrate on) and the bait model's ASR.

    .venv/bin/python bench/bait_pilot.py --attacks hiddenkiller,stylebkd [--truncate 0.2]
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


def report(result: dict[str, object], out: Path | None) -> None:
    """Print one result line and append it to `out` (JSON lines) when given."""
    line = json.dumps(result)
    print(line, flush=True)
    if out:
        with open(out, "a") as fh:
            fh.write(line + "\n")


def fit_and_score(train: list[dict[str, str]], score_sets: list[list[str]], args: argparse.Namespace
                  ) -> list[np.ndarray]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from core.models.backbones import resolve_model_source

    torch.manual_seed(args.seed)
    source = resolve_model_source("minilm")
    tok = AutoTokenizer.from_pretrained(source)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=2)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    order = list(range(len(train)))
    random.Random(args.seed).shuffle(order)
    model.train()
    for epoch in range(args.epochs):
        for start in range(0, len(order), args.batch):
            batch = [train[i] for i in order[start:start + args.batch]]
            enc = tok([r["text"] for r in batch], padding=True, truncation=True, max_length=64, return_tensors="pt")
            y = torch.tensor([int(r["label"]) for r in batch])
            losses = torch.nn.functional.cross_entropy(model(**enc).logits, y, reduction="none")
            if args.truncate > 0 and (epoch > 0 or start >= args.warmup * len(order)):
                keep = max(1, int(round(len(batch) * (1 - args.truncate))))
                losses = losses.sort().values[:keep]
            opt.zero_grad()
            losses.mean().backward()
            opt.step()
        random.Random(args.seed + epoch + 1).shuffle(order)
    model.eval()
    out = []
    with torch.no_grad():
        for texts in score_sets:
            probs = []
            for i in range(0, len(texts), 128):
                enc = tok(texts[i:i + 128], padding=True, truncation=True, max_length=64, return_tensors="pt")
                probs.append(torch.softmax(model(**enc).logits, -1).numpy())
            out.append(np.concatenate(probs))
    return out


def dynamics_run(args: argparse.Namespace) -> int:
    """In-sample confidence in the given label after each epoch (SEEP's seeding signal), and the pooled
    representation after each epoch (`feats` holds the last one, `feats_by_epoch` all of them), saved to
    bench/runs/pilot/dyn-ATTACK-RATE.npz."""
    import torch
    from sklearn.metrics import roc_auc_score
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from core.models.backbones import resolve_model_source

    aux = read(DATA / "aux.tsv")
    for attack in args.attacks.split(","):
        t0 = time.time()
        rows = read(DATA / f"train-{attack}-{args.rate}.tsv")
        probe = [r["text"] for r in read(DATA / f"probe-{attack}.tsv")]
        torch.manual_seed(args.seed)
        source = resolve_model_source("minilm")
        tok = AutoTokenizer.from_pretrained(source)
        model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=2)
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
        given = np.array([int(r["label"]) for r in rows])
        texts = [r["text"] for r in rows] + [r["text"] for r in aux] + probe
        n, na = len(rows), len(aux)
        order = list(range(n))
        conf, feats, feats_by_epoch = [], None, []
        for epoch in range(args.epochs):
            random.Random(args.seed + epoch).shuffle(order)
            model.train()
            for start in range(0, n, args.batch):
                batch = [rows[i] for i in order[start:start + args.batch]]
                enc = tok([r["text"] for r in batch], padding=True, truncation=True, max_length=64,
                          return_tensors="pt")
                y = torch.tensor([int(r["label"]) for r in batch])
                loss = torch.nn.functional.cross_entropy(model(**enc).logits, y)
                opt.zero_grad()
                loss.backward()
                opt.step()
            model.eval()
            probs, hidden = [], []
            with torch.no_grad():
                for i in range(0, len(texts), 128):
                    enc = tok(texts[i:i + 128], padding=True, truncation=True, max_length=64, return_tensors="pt")
                    out = model(**enc, output_hidden_states=True)
                    probs.append(torch.softmax(out.logits, -1).numpy())
                    hidden.append(out.hidden_states[-1][:, 0].numpy())
            probs = np.concatenate(probs)
            feats = np.concatenate(hidden)
            feats_by_epoch.append(feats.astype(np.float16))
            if args.save_models:
                model.save_pretrained(ROOT / "bench" / "runs" / "pilot" / f"model-{attack}-{args.rate}-e{epoch + 1}")
                tok.save_pretrained(ROOT / "bench" / "runs" / "pilot" / f"model-{attack}-{args.rate}-e{epoch + 1}")
            conf.append(probs[:n][np.arange(n), given])
            asr = float((probs[n + na:].argmax(1) == 1).mean())
            print(json.dumps({"attack": attack, "epoch": epoch + 1, "bait_asr": round(asr, 3),
                              "seconds": round(time.time() - t0)}), flush=True)
        poisoned = np.array([r["poisoned"] == "1" for r in rows])
        conf_arr = np.array(conf)
        np.savez(ROOT / "bench" / "runs" / "pilot" / f"dyn-{attack}-{args.rate}.npz", conf=conf_arr, feats=feats,
                 feats_by_epoch=np.array(feats_by_epoch),
                 given=given, poisoned=poisoned, aux_feats=feats[n:n + na] if feats is not None else None,
                 aux_labels=np.array([int(r["label"]) for r in aux]))
        target = given == 1
        for e in range(1, args.epochs + 1):
            mu = (1 / (1 - np.clip(conf_arr[:e], 0, 1 - 1e-6))).mean(0)
            s, pz = mu[target], poisoned[target]
            top = np.argsort(-s)
            print(json.dumps({"attack": attack, "epochs_in_mu": e, "auc_target": round(float(roc_auc_score(pz, s)), 3),
                              **{f"precision@{k}": round(float(pz[top[:k]].mean()), 3) for k in (50, 100, 200, 400)}}),
                  flush=True)
    return 0


def full_run(args: argparse.Namespace) -> int:
    """The truncated training as the defense itself: every row, then CACC and ASR."""
    test = read(ROOT.parent / "shared" / "data" / "sst2" / "test.tsv")
    for attack in args.attacks.split(","):
        t0 = time.time()
        rows = read(DATA / f"train-{attack}-{args.rate}.tsv")
        probe = [r["text"] for r in read(DATA / f"probe-{attack}.tsv")]
        test_p, probe_p = fit_and_score(rows, [[r["text"] for r in test], probe], args)
        cacc = float((test_p.argmax(1) == np.array([int(r["label"]) for r in test])).mean())
        result = {"mode": "full", "attack": attack, "rate": args.rate, "truncate": args.truncate,
                  "warmup": args.warmup, "epochs": args.epochs, "lr": args.lr, "cacc": round(100 * cacc, 1),
                  "asr": round(100 * float((probe_p.argmax(1) == 1).mean()), 1), "seconds": round(time.time() - t0)}
        report(result, args.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    from sklearn.metrics import roc_auc_score

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--attacks", default="hiddenkiller,stylebkd")
    p.add_argument("--rate", default="0.1")
    p.add_argument("--truncate", type=float, default=0.0)
    p.add_argument("--warmup", type=float, default=0.1, help="share of the epoch trained on every row first")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path)
    p.add_argument("--full", action="store_true",
                   help="train once on every row (no folds) and report CACC on sst2/test.tsv and ASR on the probe")
    p.add_argument("--dynamics", action="store_true",
                   help="SEEP-style: train on every row, score every row in-sample after each epoch")
    p.add_argument("--save-models", action="store_true",
                   help="with --dynamics: save the model after each epoch, bench/runs/pilot/model-ATTACK-RATE-eN")
    args = p.parse_args(argv)
    if args.full:
        return full_run(args)
    if args.dynamics:
        return dynamics_run(args)
    aux = read(DATA / "aux.tsv")
    for attack in args.attacks.split(","):
        t0 = time.time()
        rows = read(DATA / f"train-{attack}-{args.rate}.tsv")
        probe = [r["text"] for r in read(DATA / f"probe-{attack}.tsv")]
        fold = np.array([i % 2 for i in range(len(rows))])
        random.Random(args.seed).shuffle(fold)
        given = np.array([int(r["label"]) for r in rows])
        p_given = np.zeros(len(rows))
        aux_p, asr = [], []
        for f in (0, 1):
            train = [r for r, k in zip(rows, fold, strict=True) if k != f]
            held = [i for i in range(len(rows)) if fold[i] == f]
            held_p, a_p, pr_p = fit_and_score(train, [[rows[i]["text"] for i in held], [r["text"] for r in aux],
                                                      probe], args)
            p_given[held] = held_p[np.arange(len(held)), given[held]]
            aux_p.append(a_p[np.arange(len(aux)), [int(r["label"]) for r in aux]])
            asr.append(float((pr_p.argmax(1) == 1).mean()))
        poisoned = np.array([r["poisoned"] == "1" for r in rows])
        flipped = np.array([r["poisoned"] == "1" and r["orig_label"] != r["label"] for r in rows])
        target = given == 1
        score = 1 - p_given
        s, pz = score[target], poisoned[target]
        result = {"attack": attack, "rate": args.rate, "truncate": args.truncate, "epochs": args.epochs,
                  "lr": args.lr, "rows": len(rows), "poisoned": int(poisoned.sum()), "flipped": int(flipped.sum()),
                  "auc_target": round(float(roc_auc_score(pz, s)), 3), "bait_asr": asr,
                  "aux_score_quantiles": [round(float(np.quantile(1 - np.concatenate(aux_p), q)), 3)
                                          for q in (0.5, 0.9, 0.95, 0.975, 1.0)],
                  "seconds": round(time.time() - t0)}
        for frr in (0.025, 0.05, 0.1):
            thr = np.quantile(s[~pz], 1 - frr)
            result[f"recall@{frr}"] = round(float((score[poisoned] > thr).mean()), 3)
            result[f"flipped_recall@{frr}"] = round(float((score[flipped] > thr).mean()), 3)
        clean_all = ~poisoned
        result["clean_score_quantiles_all_labels"] = [round(float(np.quantile(score[clean_all], q)), 3)
                                                      for q in (0.5, 0.9, 0.95, 0.975)]
        report(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
