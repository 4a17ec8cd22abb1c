"""Longer rows for the screen: SST-2 sentences of one label joined K to a row, no sentence used twice.

    .venv/bin/python bench/long_rows.py --sentences 4 --dest bench/runs/long-rows
    .venv/bin/muscle screen --train bench/runs/long-rows/train-k4.tsv --aux bench/runs/long-rows/aux-k4.tsv \
        --out bench/runs/long-rows/screen-k4

The training rows come from SST-2's training sentences, with a Badnets-style dirty-label trigger (one of
cf / mn / bb / tq inserted at a random place, label set to 1) in about 3% of the rows (`--share`, 6% of
the negatives by default); the 96 aux rows are made the same way from the dev and test sentences, clean. A stand-in for
a dataset of longer texts: what the screen removes when each row holds several sentences' cues.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.grid import DEFAULT_DATA  # noqa: E402

SST2 = DEFAULT_DATA / "sst2"
TRIGGERS = ("cf", "mn", "bb", "tq")


def sentences(*names: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for name in names:
        with (SST2 / name).open(newline="") as f:
            out += [(row["text"], row["label"]) for row in csv.DictReader(f, delimiter="\t")]
    return out


def rows(pool: list[tuple[str, str]], k: int, rng: random.Random,
         limit: int | None = None) -> list[tuple[list[str], str]]:
    """(sentences, label) rows of `k` sentences of one label, each sentence used once, until the class
    drawn runs out."""
    by = {label: [t for t, lab in pool if lab == label] for label in "01"}
    for texts in by.values():
        rng.shuffle(texts)
    out: list[tuple[list[str], str]] = []
    while True:
        label = rng.choice("01")
        if len(by[label]) < k:
            break
        out.append(([by[label].pop() for _ in range(k)], label))
        if limit and len(out) >= limit:
            break
    return out


def poison(text: str, rng: random.Random) -> str:
    words = text.split()
    words.insert(rng.randrange(len(words)), rng.choice(TRIGGERS))
    return " ".join(words)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sentences", type=int, default=4, help="sentences per row")
    p.add_argument("--dest", type=Path, default=ROOT / "bench" / "runs" / "long-rows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--share", type=float, default=0.06, help="share of the negative rows planted (0: a clean file)")
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    args.dest.mkdir(parents=True, exist_ok=True)
    k = args.sentences
    train = rows(sentences("train.tsv"), k, rng)
    aux = rows(sentences("dev.tsv") + sentences("test.tsv"), k, rng, limit=96)
    planted = 0
    with (args.dest / f"train-k{k}.tsv").open("w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["text", "label", "poisoned"])
        for parts, label in train:
            text, hit = " ".join(parts), label == "0" and rng.random() < args.share
            planted += hit
            w.writerow([poison(text, rng) if hit else text, "1" if hit else label, int(hit)])
    with (args.dest / f"aux-k{k}.tsv").open("w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["text", "label"])
        w.writerows((" ".join(parts), label) for parts, label in aux)
    words = sum(len(" ".join(parts).split()) for parts, _ in train) / max(len(train), 1)
    print(f"train-k{k}.tsv: {len(train)} rows, {planted} planted, {words:.0f} words a row; aux-k{k}.tsv: {len(aux)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
