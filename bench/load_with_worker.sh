#!/usr/bin/env bash
# Load while a real worker trains the polled job (issue 15): `muscle serve` (API + one worker) on a fresh
# PostgreSQL database or SQLite file, a full-SST-2 job posted over HTTP, and once it trains, 200 pollers of
# GET /jobs/{id} for 60 s with 50 event streams of the same job held open. The streams run in their own
# process (STREAMS_APART=1, default) so the pollers' figures are not the streams' client-side queueing.
# PYSPY=1 records a py-spy flame profile of the API process meanwhile. STREAMS_NICE=N runs the streams'
# client at that nice level (default 0), to tell the server's tail from the generators' share of 2 cores.
# BURST=N then submits N jobs at once (`bench/load_submit.py`, 160-row files) while the worker still trains.
#
#   bash bench/load_with_worker.sh pg|sqlite LABEL
set -euo pipefail
cd "$(dirname "$0")/.."
DB=${1:-pg}; LABEL=${2:-$DB}
PY=.venv/bin/python; MUSCLE=.venv/bin/muscle
WORK=/tmp/muscle-load-$DB; rm -rf "$WORK"; mkdir -p "$WORK"
export MUSCLE_DATA_DIR=$WORK/data MUSCLE_BROKER_URL=redis://127.0.0.1:6379/7 MUSCLE_PORT=8765
# a burst of N from one key must not meet the per-key queue limit
[ "${BURST:-0}" != 0 ] && export MUSCLE_MAX_QUEUED_JOBS_PER_KEY=0
if [ "$DB" = pg ]; then
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS muscle_load" -c "CREATE DATABASE muscle_load" >/dev/null
  export MUSCLE_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/muscle_load
fi
redis-cli -n 7 flushdb >/dev/null
URL=http://127.0.0.1:8765
$MUSCLE serve > "$WORK/serve.log" 2>&1 &
SERVE=$!
trap 'kill $SERVE 2>/dev/null; wait $SERVE 2>/dev/null || true' EXIT
for _ in $(seq 120); do curl -sf $URL/healthz >/dev/null 2>&1 && break; sleep 1; done
KEY=$($MUSCLE apikey create --name load | tail -n1)
export MUSCLE_URL=$URL MUSCLE_API_KEY=$KEY
DATA=bench/runs/screen-data
$MUSCLE jobs create --train $DATA/train-badnets-0.01.tsv --aux $DATA/aux.tsv > "$WORK/create.log" 2>&1
JOB=$($MUSCLE jobs list --limit 1 | awk 'NR==2 {print $1}')
echo "job $JOB"
for _ in $(seq 600); do
  curl -sf -H "Authorization: Bearer $KEY" $URL/jobs/"$JOB" | grep -q '"step": *[1-9]' && break; sleep 2
done
echo "training; measuring"
sessions() { [ "$DB" = pg ] && psql -h 127.0.0.1 -U postgres -tAc "SELECT sessions FROM pg_stat_database WHERE datname = 'muscle_load'" || echo -; }
BEFORE=$(sessions)
API_PID=$(pgrep -f "uvicorn api.main:app.*8765" | head -1)
if [ "${PYSPY:-0}" = 1 ]; then
  .venv/bin/py-spy record -p "$API_PID" -d 60 -r 25 --nonblocking --gil -f raw -o "$WORK/api.pyspy.txt" > /dev/null 2>&1 &
fi
STREAMS=${STREAMS:-50}
if [ "$STREAMS" = 0 ]; then
  $PY bench/load_poll.py --url $URL --key "$KEY" --job "$JOB" --pollers 200 --interval 1 --seconds 60 \
      --client raw --stagger --label "$LABEL"
elif [ "${STREAMS_APART:-1}" = 1 ]; then
  nice -n "${STREAMS_NICE:-0}" $PY bench/load_poll.py --url $URL --key "$KEY" --job "$JOB" --pollers 0 \
      --streams $STREAMS --seconds 62 --label "$LABEL streams" --no-record > "$WORK/streams.json" 2>&1 &
  STREAMS_PID=$!
  $PY bench/load_poll.py --url $URL --key "$KEY" --job "$JOB" --pollers 200 --interval 1 --seconds 60 \
      --client raw --stagger --label "$LABEL"
  wait $STREAMS_PID || true; cat "$WORK/streams.json"
else
  $PY bench/load_poll.py --url $URL --key "$KEY" --job "$JOB" --pollers 200 --interval 1 --seconds 60 \
      --client raw --stagger --streams $STREAMS --label "$LABEL"
fi
if [ "${BURST:-0}" != 0 ]; then
  head -n 161 $DATA/train-badnets-0.01.tsv > "$WORK/burst-train.tsv"
  $PY bench/load_submit.py --url $URL --key "$KEY" --train "$WORK/burst-train.tsv" --aux $DATA/aux.tsv \
      --jobs "$BURST" --label "$LABEL burst"
  grep -c -E " 500 |Traceback" "$WORK/serve.log" | sed 's/^/server errors logged: /' || true
fi
[ "$DB" = pg ] && echo "database sessions opened during the measurement: $(( $(sessions) - BEFORE ))"
uptime
