#!/usr/bin/env bash
# A private PostgreSQL server for the demo, the tests and the benchmark, from Debian's
# binaries, in a folder of its own, on its own port and socket directory.
#   pg.sh start DIR PORT   -> initdb (once), start, create role and database "eventsink"
#                             (PG_LISTEN=addr,addr: listen there too; default 127.0.0.1)
#   pg.sh stop DIR [fast|immediate]
#   pg.sh status DIR
# As root the server runs as the "postgres" system user (initdb refuses root).
set -euo pipefail
cmd=${1:?start|stop|status}
dir=${2:?data folder}

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$bindir" ] || { echo "pg.sh: PostgreSQL server binaries not found (scripts/install-deps.sh installs them)" >&2; exit 1; }

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
data="$dir/data"
sock="$dir/sock"

case "$cmd" in
start)
  port=${3:?port}
  mkdir -p "$sock"
  if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$dir" "$sock"; fi
  if [ ! -f "$data/PG_VERSION" ]; then
    as_pg "$bindir/initdb" -D "$data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    cat >>"$data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$sock'
max_connections = 200
shared_buffers = 256MB
fsync = on
logging_collector = off
CONF
  fi
  # PG_LISTEN: the addresses to listen on, comma-separated (default 127.0.0.1)
  as_pg "$bindir/pg_ctl" -D "$data" -o "-p $port -k $sock -c listen_addresses=${PG_LISTEN:-127.0.0.1}" \
    -l "$dir/server.log" -w -t 60 start >/dev/null
  for _ in $(seq 1 60); do
    if as_pg "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port"; then break; fi
    sleep 0.5
  done
  psql_() { as_pg psql -X -q -h 127.0.0.1 -p "$port" -U postgres -v ON_ERROR_STOP=1 "$@"; }
  if ! psql_ -d postgres -tAc "SELECT 1 FROM pg_roles WHERE rolname='eventsink'" | grep -q 1; then
    psql_ -d postgres -c "CREATE ROLE eventsink LOGIN SUPERUSER"
  fi
  if ! psql_ -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='eventsink'" | grep -q 1; then
    psql_ -d postgres -c "CREATE DATABASE eventsink OWNER eventsink"
  fi
  ;;
stop)
  mode=${3:-fast}
  if [ -f "$data/postmaster.pid" ]; then
    as_pg "$bindir/pg_ctl" -D "$data" -m "$mode" -w -t 60 stop >/dev/null || true
  fi
  ;;
status)
  as_pg "$bindir/pg_ctl" -D "$data" status
  ;;
*) echo "usage: $0 start DIR PORT | stop DIR [fast|immediate] | status DIR" >&2; exit 2 ;;
esac
