#!/usr/bin/env bash
# Run e2e.py cells one after another in one lane (one CPU thread each); start two lanes side by side.
#   bash bench/e2e_queue.sh TAG "badnets:0.1:default addsent:0.1:free ..." [--set KEY=VALUE ...]
set -uo pipefail
cd "$(dirname "$0")/.."
tag=$1; cells=$2; shift 2
for cell in $cells; do
  IFS=: read -r attack rate arm <<<"$cell"
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python bench/e2e.py run --tag "$tag" --attack "$attack" \
    --rate "$rate" --arm "$arm" "$@" || echo "cell $cell failed" >&2
done
