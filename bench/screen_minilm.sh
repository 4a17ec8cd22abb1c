#!/usr/bin/env bash
# Screening for the efficacy study (docs/efficacy.md): one change at a time from the reference settings,
# muscle on a 2,000-row Badnets-poisoned SST-2 subset (clean-label, 10%), 3 epochs, 400 test rows.
# Cheap enough for one CPU core (about 8 minutes a muscle run); numbers are screening evidence only.
# Every run is recorded in bench/results/grid.jsonl under its tag; rerun to resume.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
common=(--attacks badnets --epochs 3 --limit-train 2000 --limit-eval 400)
run() { tag=$1; shift; .venv/bin/python bench/grid.py run --tag "screen-$tag" "${common[@]}" "$@"; }
run ref            --defenses muscle --profile reference
run lr2e-4         --defenses muscle --profile reference --lr 2e-4
run lr2e-4-zero    --defenses muscle --profile reference --lr 2e-4 --set mslr_init=zero
run lr2e-4-zero-probe --defenses muscle --profile reference --lr 2e-4 --set mslr_init=zero --set head_init=probe
run vanilla        --defenses vanilla --profile reference
run lora-lr2e-4    --defenses lora --profile reference --lr 2e-4
