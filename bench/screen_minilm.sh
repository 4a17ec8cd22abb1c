#!/usr/bin/env bash
# Screening for the efficacy study (bench/notes/muscle-efficacy-study.md): one change at a time from a fixed base,
# on a 2,000-row poisoned SST-2 subset (10%), 3 epochs, 400 test rows, 1 CPU thread per run.
# Cheap enough for one CPU core (about 8 minutes a muscle run); numbers are screening evidence only.
# Every run is recorded in bench/results/grid.jsonl under its tag; rerun a stage to resume it.
#   bash bench/screen_minilm.sh 1   # stage 1: from `reference` (lr, MSLR init, head init)
#   bash bench/screen_minilm.sh 2   # stage 2: from lr 2e-4 + mslr_init=zero (gate, mu, clean batch, lr, head)
#   bash bench/screen_minilm.sh 3   # stage 3: from the paper-literal gate (lr, mu)
#   bash bench/screen_minilm.sh 4   # stage 4: trained head, per-row GA
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
stage=${1:-1}
common=(--attacks badnets --epochs 3 --limit-train 2000 --limit-eval 400)
run() { tag=$1; shift; .venv/bin/python bench/grid.py run --tag "screen-$tag" "${common[@]}" "$@"; }
if [ "$stage" = 1 ]; then
  run ref            --defenses muscle --profile reference
  run lr2e-4         --defenses muscle --profile reference --lr 2e-4
  run lr2e-4-zero    --defenses muscle --profile reference --lr 2e-4 --set mslr_init=zero
  run lr2e-4-zero-probe --defenses muscle --profile reference --lr 2e-4 --set mslr_init=zero --set head_init=probe
  run vanilla        --defenses vanilla --profile reference
  run lora-lr2e-4    --defenses lora --profile reference --lr 2e-4
fi
if [ "$stage" = 2 ]; then
  base=(--defenses muscle --profile reference --lr 2e-4 --set mslr_init=zero)
  # The gate: with ga_gate_loss=0.4 every step whose clean loss is under 0.4 applies the raw poisoned
  # gradient in epoch 0 (calibration.md's hypothesis). null = paper-literal: always Eq. 8 with mu.
  run z-nogate-mu0   "${base[@]}" --set ga_gate_loss=null --set mu_max=0
  run z-nogate       "${base[@]}" --set ga_gate_loss=null
  run z-lr5e-4       --defenses muscle --profile reference --lr 5e-4 --set mslr_init=zero
  run z-nogate-mu0-lr5e-4 --defenses muscle --profile reference --lr 5e-4 --set mslr_init=zero \
                     --set ga_gate_loss=null --set mu_max=0
  run z-aux96        "${base[@]}" --set aux_batch_size=96
  run z-nogate-mu0-aux96 "${base[@]}" --set ga_gate_loss=null --set mu_max=0 --set aux_batch_size=96
  run z-trainhead    "${base[@]}" --set train_head=true
fi
if [ "$stage" = 3 ]; then
  # Without the gate the backdoor stays at its floor (ASR = clean negatives already called positive):
  # what is left is clean accuracy. From the paper-literal base, what makes the model learn more?
  base=(--defenses muscle --profile reference --lr 2e-4 --set mslr_init=zero --set ga_gate_loss=null)
  # Aligned steps are short (|g.g_c|/|g_c|^2 is small when g and g_c are far apart): try larger lr.
  lr() { run "z-nogate-lr$1" --defenses muscle --profile reference --lr "$1" --set mslr_init=zero \
           --set ga_gate_loss=null "${@:2}"; }
  lr 1e-3
  run z-nogate-mu0.5   "${base[@]}" --set mu_max=0.5
  lr 5e-4
fi
if [ "$stage" = 4 ]; then
  # Neither lr nor mu moves clean accuracy much: LoRA on q/v has to bend the representation towards a
  # frozen random head. Train the head (aligned like every other tensor), and align per row.
  base=(--defenses muscle --profile reference --set mslr_init=zero --set ga_gate_loss=null)
  run z-nogate-head        "${base[@]}" --lr 2e-4 --set train_head=true
  run z-nogate-head-lr1e-3 "${base[@]}" --lr 1e-3 --set train_head=true
  run z-nogate-perrow      "${base[@]}" --lr 2e-4 --set ga_granularity=per_row
  run z-nogate-head-perrow "${base[@]}" --lr 2e-4 --set train_head=true --set ga_granularity=per_row
fi
