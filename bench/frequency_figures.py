"""The paper's frequency figures (Fig. 1, 2, 5) for vanilla and muscle on Badnets, from grid runs.

    OMP_NUM_THREADS=1 .venv/bin/python bench/frequency_figures.py run      # train both (resumable)
    .venv/bin/python bench/frequency_figures.py collect                    # copy + Fig. 5 side by side

`run` trains vanilla (reference settings) and muscle (default profile) through `bench/grid.py` with the
frequency analysis on (`--set frequency_every=N`), on the screening subset: 2,000 SST-2 rows with 10%
clean-label Badnets, 3 epochs (see `--limit-train`, `--epochs`). `collect` copies each run's
`analysis/` files to `bench/results/frequency/<method>/` and draws both heatmaps in one figure
(`bench/results/frequency/methods_re.png`), with a `README.md` naming the runs and their wall time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # sibling scripts: one reader of the grid's JSONL
from render import load_records, pct  # noqa: E402

TAG = "frequency"
OUT = ROOT / "bench" / "results" / "frequency"
# (defense, profile): vanilla as the paper's baseline; muscle as the service ships it.
RUNS = [("vanilla", "reference"), ("muscle", "default")]


def grid_args(defense: str, profile: str, args: argparse.Namespace) -> list[str]:
    return [sys.executable, str(ROOT / "bench" / "grid.py"), "run", "--tag", f"{TAG}-{profile}",
            "--defenses", defense, "--attacks", "badnets", "--profile", profile, "--epochs", str(args.epochs),
            "--limit-train", str(args.limit_train), "--limit-eval", str(args.limit_eval),
            "--set", f"frequency_every={args.every}"]


def latest(defense: str, profile: str) -> dict:
    found = next((rec for rec in load_records(ROOT / "bench" / "results" / "grid.jsonl")
                  if rec.get("tag") == f"{TAG}-{profile}" and rec.get("defense") == defense), None)
    if found is None:
        raise SystemExit(f"no finished {defense} run under tag {TAG}-{profile}; run `run` first")
    return found


def collect() -> None:
    sys.path.insert(0, str(ROOT))
    from core.analysis.plots import plot_methods

    histories, lines = {}, []
    for defense, profile in RUNS:
        rec = latest(defense, profile)
        # records before train_dir was stored name the folder only in the train command's --out
        train_dir = rec.get("train_dir") or rec["commands"][-1].split("--out ")[1].split()[0]
        src = Path(train_dir) / "analysis"
        dest = OUT / defense
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(src, dest)
        histories[defense] = json.loads((dest / "frequency.json").read_text())["history"]
        lines.append(f"| {defense} | {profile} | {pct(rec['cacc'])} | {pct(rec['asr'])} | "
                     f"{rec['wall_seconds'] / 60:.1f} min | `{rec['cell']}` |")
    plot_methods(histories, OUT / "methods_re.png")
    (OUT / "README.md").write_text(
        "# Frequency-space figures: vanilla vs muscle on Badnets\n\n"
        "Made by `bench/frequency_figures.py run` then `collect` (screening subset: 2,000 SST-2 rows, 10% "
        "clean-label Badnets, 3 epochs, 400 test rows, 1 CPU thread each; see docs/analysis.md for the "
        "metrics). Per method: `frequency_ratios.png` (Fig. 1 style: LFR/HFR of the clean and backdoor "
        "mappings), `frequency_re.png` (Fig. 2 style: relative errors, red = small), `frequency.json` "
        "(every record). `methods_re.png` puts both heatmaps side by side (Fig. 5 style).\n\n"
        "| method | profile | CACC | ASR | wall | grid cell |\n| --- | --- | --- | --- | --- | --- |\n"
        + "\n".join(lines) + "\n")
    print(f"wrote {OUT}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["run", "collect"])
    parser.add_argument("--every", type=int, default=10, help="record every N optimiser steps")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit-train", type=int, default=2000)
    parser.add_argument("--limit-eval", type=int, default=400)
    args = parser.parse_args(argv)
    if args.action == "run":
        for defense, profile in RUNS:
            subprocess.run(grid_args(defense, profile, args), check=True, cwd=ROOT)
    collect()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
