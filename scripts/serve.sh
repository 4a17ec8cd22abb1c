#!/usr/bin/env bash
# Run the service on embedded defaults (SQLite, local artifacts under ./muscle-data, port 8000).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
exec .venv/bin/muscle serve "$@"
