#!/usr/bin/env bash
# Make sure Redis (127.0.0.1:6379) and PostgreSQL (127.0.0.1:5432, trust auth, database `test`) answer.
# Installs the Debian packages where they are missing and starts what is stopped. Needs root (or sudo).
set -euo pipefail
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
apt_updated=0
need_pkg() {  # need_pkg COMMAND PACKAGE...
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ $apt_updated = 0 ]; then $SUDO apt-get update -qq; apt_updated=1; fi
  shift; DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

redis_up() { (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; }
if ! redis_up; then
  need_pkg redis-server redis-server
  mkdir -p /tmp/muscle-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp/muscle-redis --logfile /tmp/muscle-redis/redis.log
  for _ in $(seq 50); do redis_up && break; sleep 0.2; done
fi
redis_up || { echo "[services] Redis did not start on 127.0.0.1:6379" >&2; exit 1; }

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
if ! command -v pg_isready >/dev/null 2>&1 || ! pg_up; then
  need_pkg pg_ctlcluster postgresql
  ver=$(ls /etc/postgresql | sort -V | tail -n1)
  conf=/etc/postgresql/$ver/main
  # Local test server: trust auth on loopback, as on the project's machines.
  if ! grep -q "muscle-trust" "$conf/pg_hba.conf"; then
    $SUDO sed -i '1i host all all 127.0.0.1/32 trust # muscle-trust\nhost all all ::1/128 trust # muscle-trust\nlocal all all trust # muscle-trust' "$conf/pg_hba.conf"
  fi
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$ver" main start 2>/dev/null || \
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$ver" main reload 2>/dev/null || true
  for _ in $(seq 50); do pg_up && break; sleep 0.2; done
fi
pg_up || { echo "[services] PostgreSQL did not start on 127.0.0.1:5432" >&2; exit 1; }
psql -h 127.0.0.1 -U postgres -tAc "select 1 from pg_database where datname='test'" | grep -q 1 || \
  psql -h 127.0.0.1 -U postgres -c "create database test" >/dev/null
# The compose file's validator (tests/test_packaging.py): the plugin where Docker has it, else Debian's.
if ! docker compose version >/dev/null 2>&1; then
  need_pkg docker-compose docker-compose || echo "[services] docker-compose not installed: its check skips" >&2
fi
echo "[services] Redis and PostgreSQL are up" >&2
