"""Build the screen benchmark's poisoned training files from ../shared/data (never copied into git).

One file per attack and rate under bench/runs/screen-data/ (gitignored), each with the `poisoned` and
`orig_label` columns the screen is scored against, plus the 96-row aux set and the select set the grid
uses (bench/grid.py: the same seed, so the same rows):

  badnets (clean-label, OpenBackdoor's BadNets config), badnets-dirty, addsent (mix): our poisoner on
  sst2/train.tsv; hiddenkiller (mix) and stylebkd (dirty): the released paraphrases, a seeded share kept.

    .venv/bin/python bench/screen_data.py [--rates 0.01,0.03,0.1]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.grid import DEFAULT_DATA, _read, _write, build_hiddenkiller_train  # noqa: E402

# MUSCLE_SCREEN_DATA: build into / read from another folder (small copies for a smoke run)
OUT = Path(os.environ.get("MUSCLE_SCREEN_DATA", ROOT / "bench" / "runs" / "screen-data"))
ATTACKS = ("badnets", "badnets-dirty", "addsent", "hiddenkiller", "stylebkd")
POISONER = {"badnets": ("badnets", "clean"), "badnets-dirty": ("badnets", "dirty"), "addsent": ("addsent", "mix")}
AUX_SIZE, AUX_SEED, SEED = 96, 42, 42


def train_path(attack: str, rate: float) -> Path:
    return OUT / f"train-{attack}-{rate:g}.tsv"


def probe_path(attack: str) -> Path:
    """The probe: our trigger on the clean test set's negatives, or the released triggered test set."""
    return OUT / f"probe-{attack}.tsv"


def build_stylebkd_train(src: Path, out: Path, rate: float, seed: int) -> None:
    """All clean rows, plus int(rate * clean / (1 - rate)) of the released poisoned rows (seeded), in file
    order, so that the poisoned share of the result is `rate`."""
    rows = _read(src / "train.tsv")
    clean = [i for i, r in enumerate(rows) if r.extra.get("poisoned") != "1"]
    poisoned = [i for i, r in enumerate(rows) if r.extra.get("poisoned") == "1"]
    n = round(rate * len(clean) / (1 - rate))
    keep = set(clean) | set(random.Random(seed).sample(poisoned, n))
    _write(out, [r for i, r in enumerate(rows) if i in keep], ("poisoned", "orig_label"))


def build(rates: list[float]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    sst2 = DEFAULT_DATA / "sst2"
    dev = _read(sst2 / "dev.tsv")
    picked = set(random.Random(AUX_SEED).sample(range(len(dev)), AUX_SIZE))
    _write(OUT / "aux.tsv", [r for i, r in enumerate(dev) if i in picked])
    _write(OUT / "select.tsv", [r for i, r in enumerate(dev) if i not in picked])
    muscle = [sys.executable, "-m", "core.cli"]
    for attack in ATTACKS:
        for rate in rates:
            out = train_path(attack, rate)
            if out.exists():
                continue
            if attack in POISONER:
                trigger, mode = POISONER[attack]
                subprocess.run([*muscle, "poison", "--in", str(sst2 / "train.tsv"), "--out", str(out),
                                "--attack", trigger, "--rate", f"{rate:g}", "--target-label", "1",
                                "--mode", mode, "--seed", str(SEED)], check=True, cwd=ROOT,
                               stdout=subprocess.DEVNULL)
            elif attack == "hiddenkiller":
                build_hiddenkiller_train(DEFAULT_DATA / "sst2-hiddenkiller", sst2 / "train.tsv", out, rate, SEED,
                                         None)
            else:
                build_stylebkd_train(DEFAULT_DATA / "sst2-stylebkd", out, rate, SEED)
    for attack in ("hiddenkiller", "stylebkd"):
        rows = [r for r in _read(DEFAULT_DATA / f"sst2-{attack}" / "test.tsv")
                if r.extra.get("orig_label", r.label) != "1"]
        _write(probe_path(attack), rows, ("poisoned", "orig_label"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rates", default="0.01,0.03,0.1")
    args = p.parse_args(argv)
    build([float(r) for r in args.rates.split(",")])
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
