#!/usr/bin/env bash
# Control for bench/notes/muscle-efficacy-study.md finding 8: what the 96 clean aux rows alone teach the default muscle
# model. Same trainable parts (LoRA on query/value + the zero-initialised multi-scale module, frozen
# random head), same lr 5e-4, no alignment (the data is clean): `muscle-no-ga` on the aux rows only.
# The aux file is repeated 24 times so one epoch is 72 steps and 3 epochs (216 steps) see each aux row
# about as often as default muscle's first full-data epoch (217 clean batches of 32). Needs the grid's
# data files (any `bench/grid.py run` on sst2 writes them). About 12 min on one CPU thread.
#   bash bench/aux_only_control.sh
#   cp bench/runs/controls/auxonly-x24-e3/metrics.json bench/results/controls/auxonly-muscle-no-ga.json
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
D=bench/runs/data/sst2
aux=$D/aux96-s42.tsv
repeated=$D/aux96x24-s42.tsv
[ -f "$aux" ] || { echo "missing $aux: run bench/grid.py on sst2 first" >&2; exit 2; }
{ head -1 "$aux"; for _ in $(seq 24); do tail -n +2 "$aux"; done; } > "$repeated"
.venv/bin/muscle train --train "$repeated" --aux "$aux" --select "$D/select-s42.tsv" \
  --eval ../shared/data/sst2/test.tsv --probe badnets --target-label 1 --method muscle-no-ga \
  --profile default --seed 42 --epochs 3 --no-progress --out bench/runs/controls/auxonly-x24-e3
