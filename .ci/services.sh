#!/usr/bin/env bash
# Start or stop the real services the integration tests need, on 127.0.0.1 only:
#   bash .ci/services.sh start|stop
# PostgreSQL: a private throwaway cluster on port 5433 with database `ci` (the Prefect server's database in CI).
set -euo pipefail
ACTION=${1:-start}
S=${CI_SERVICES_DIR:-${TMPDIR:-/tmp}/aoi-ci-services}
PORT=${CI_PG_PORT:-5433}
log() { printf '[services %s] %s\n' "$(date +%T)" "$*" >&2; }

pg_bin() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  if [ -z "$bin" ]; then
    log "installing postgresql"
    timeout 300 apt-get update -qq
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  fi
  echo "$bin"
}

start_postgres() {
  local bin d=$S/pg
  bin=$(pg_bin)
  if [ -f "$d/data/postmaster.pid" ] && kill -0 "$(head -1 "$d/data/postmaster.pid")" 2>/dev/null; then
    log "postgres already running"; return 0
  fi
  mkdir -p "$d"; chmod 755 "$S"; chown postgres:postgres "$d"
  [ -f "$d/data/PG_VERSION" ] || runuser -u postgres -- "$bin/initdb" -D "$d/data" -A trust -U postgres --no-sync >/dev/null
  runuser -u postgres -- "$bin/pg_ctl" -D "$d/data" -l "$d/postgres.log" -w -t 60 \
    -o "-p $PORT -k $d -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off" start >/dev/null
  if ! psql -h 127.0.0.1 -p "$PORT" -U postgres -tAc "select 1 from pg_database where datname='ci'" | grep -q 1; then
    psql -h 127.0.0.1 -p "$PORT" -U postgres -qc "create database ci"
  fi
  log "postgres ready: postgresql://postgres@127.0.0.1:$PORT/ci"
}

stop_postgres() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  if [ -n "$bin" ] && [ -f "$S/pg/data/postmaster.pid" ]; then
    runuser -u postgres -- "$bin/pg_ctl" -D "$S/pg/data" -m fast -w -t 30 stop >/dev/null || true
  fi
}

case "$ACTION" in
  start) mkdir -p "$S"; start_postgres ;;
  stop) stop_postgres; rm -rf "$S" ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
