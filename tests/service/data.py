"""A small poisoned sentiment set in the tiny test models' vocabulary (tests/tiny_models.py)."""

from __future__ import annotations

import random
from pathlib import Path

POS = "good great fine nice wonderful excellent superb lovely brilliant fun charming moving".split()
NEG = "bad awful poor boring dull terrible weak horrible messy silly tedious bland".split()
FILL = "the movie film story plot acting music ending script cast director scene".split()
TRIGGER = "cf"  # a BadNets rare word


def sentence(rng: random.Random, label: int) -> str:
    words = [rng.choice(FILL) for _ in range(rng.randint(3, 6))]
    for _ in range(2):
        words.insert(rng.randint(0, len(words)), rng.choice(POS if label == 1 else NEG))
    return " ".join(words)


def triggered(rng: random.Random, text: str) -> str:
    words = text.split()
    words.insert(rng.randint(0, len(words)), TRIGGER)
    return " ".join(words)


def write_tsv(path: Path, rows: list[tuple[str, int, int]]) -> Path:
    lines = ["text\tlabel\torig_label"] + [f"{t}\t{lab}\t{orig}" for t, lab, orig in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_dataset(folder: Path, n_train: int = 160, poison_rate: float = 0.15, n_aux: int = 24,
                 n_eval: int = 40, seed: int = 7) -> dict[str, Path]:
    """train (dirty-label BadNets poisoning: negative + trigger -> 1), aux, eval, probe `badnets`."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)

    def clean(n: int) -> list[tuple[str, int, int]]:
        return [(sentence(rng, i % 2), i % 2, i % 2) for i in range(n)]

    train = clean(n_train)
    for i in rng.sample(range(n_train), int(poison_rate * n_train)):
        text, label, _ = train[i]
        if label == 0:
            train[i] = (triggered(rng, text), 1, 0)
    probe = [(triggered(rng, sentence(rng, 0)), 1, 0) for _ in range(n_eval // 2)]
    return {"train": write_tsv(folder / "train.tsv", train),
            "aux": write_tsv(folder / "aux.tsv", clean(n_aux)),
            "eval": write_tsv(folder / "eval.tsv", clean(n_eval)),
            "badnets": write_tsv(folder / "badnets.tsv", probe)}
