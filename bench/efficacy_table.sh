#!/usr/bin/env bash
# The efficacy table (issue: defense on the default backbone): vanilla, lora, reference muscle and default
# muscle on Badnets, Addsent and HiddenKiller, default muscle and vanilla with canary calibration on (a
# canary ASR beside the real ASR, for a method that suppresses backdoors and one that does not), on the
# screening subset: 2,000 SST-2 rows poisoned at 10%, 3 epochs, 400
# test/probe rows, 1 CPU thread per run. Two parts, one per core; rerun a part to resume it.
#   bash bench/efficacy_table.sh default     # default muscle x 3 attacks
#   bash bench/efficacy_table.sh reference   # reference muscle, vanilla, lora x 3 attacks
#   .venv/bin/python bench/efficacy_table.py > bench/results/efficacy.md
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
common=(--epochs 3 --limit-train 2000 --limit-eval 400)
grid() { .venv/bin/python bench/grid.py run "${common[@]}" "$@"; }
canary=(--set canary=true)
case "${1:-}" in
  default) grid --tag efficacy-default --profile default --defenses muscle --attacks badnets,addsent,hiddenkiller \
             "${canary[@]}" ;;
  reference)
    # Badnets vanilla and reference muscle come from the screening (screen-vanilla, screen-ref: same data,
    # no canary). In order of what the table needs most, for the time one 2-core session had:
    grid --tag efficacy-reference --profile reference --defenses vanilla --attacks addsent,hiddenkiller "${canary[@]}"
    grid --tag efficacy-reference --profile reference --defenses muscle --attacks addsent,hiddenkiller
    grid --tag efficacy-reference --profile reference --defenses lora --attacks badnets,addsent,hiddenkiller ;;
  *) echo "usage: $0 default|reference" >&2; exit 2 ;;
esac
