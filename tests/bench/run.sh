#!/usr/bin/env bash
# `make bench`: the eventsink benchmark (issue 8). On a fresh machine it builds the service,
# starts its own PostgreSQL (.bench/pg, track_commit_timestamp on) and Kafka broker
# (.bench/kafka), both on free ports, runs tests/bench/bench.py, and stops everything it
# started on exit, error or Ctrl-C. Figures: a table on stdout, .bench/results-<time>.json
# and .bench/latest.json. See tests/bench/README.md for the knobs (BENCH_EVENTS, ...).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
B=$root/.bench

scripts/install-deps.sh
echo "== build"
make -j"$(nproc)" all >/dev/null
make -j"$(nproc)" -f tests/bench/Makefile bench-tools >/dev/null

echo "== python environment (.venv)"
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import psycopg, confluent_kafka' 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install -q -r tests/requirements.txt
fi
echo "== kafka broker jars"
tests/kafka/broker.sh fetch x

# Fresh state for every run (a server left by a killed run is stopped first); earlier
# results-*.json files stay.
if [ -f "$B/pg/data/postmaster.pid" ]; then scripts/pg.sh stop "$B/pg" immediate || true; fi
if [ -f "$B/kafka/pid" ]; then tests/kafka/broker.sh stop "$B/kafka" || true; fi
rm -rf "$B/pg" "$B/kafka" "$B/run" "$B/tmp" "$B/logs" "$B/data" "$B/perf"
rm -f "$B"/sink-*.conf.lua "$B/samples.csv" "$B/empty-policy.lua"
mkdir -p "$B/run" "$B/tmp" "$B/logs"
# Nothing of ours under /tmp: temporary files (Python, psql, perf, the JVM) go to .bench/tmp.
export TMPDIR=$B/tmp
export JAVA_TOOL_OPTIONS="-XX:-UsePerfData -Djava.io.tmpdir=$B/tmp"
export PYTHONDONTWRITEBYTECODE=1

bench_pid=
pg_started=
kafka_started=
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  if [ -n "$bench_pid" ] && kill -0 "$bench_pid" 2>/dev/null; then
    echo "bench: stopping the benchmark (pid $bench_pid)" >&2
    kill -TERM "$bench_pid" 2>/dev/null
    for _ in $(seq 1 150); do kill -0 "$bench_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$bench_pid" 2>/dev/null
    wait "$bench_pid" 2>/dev/null
  fi
  # whatever bench.py started and could not stop (it removes the pid files it has reaped)
  for f in "$B"/run/*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    name=$(basename "$f" .pid)
    case "$name" in perf*) sig=INT ;; *) sig=TERM ;; esac
    if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ]; then
      echo "bench: ending $name (pid $pid)" >&2
      kill -"$sig" "$pid" 2>/dev/null
      for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$f"
  done
  if [ "${BENCH_KEEP:-0}" = 1 ] && [ "$rc" -eq 0 ] || [ "${BENCH_KEEP:-0}" = always ]; then
    echo "bench: BENCH_KEEP: PostgreSQL stays on 127.0.0.1:${pg_port:-?} and Kafka on" \
      "127.0.0.1:${kafka_port:-?}; stop them with: scripts/pg.sh stop .bench/pg;" \
      "tests/kafka/broker.sh stop .bench/kafka" >&2
    kafka_started= pg_started=
  fi
  if [ -n "$kafka_started" ]; then
    tests/kafka/broker.sh stop "$B/kafka"
    cp "$B/kafka/server.log" "$B/logs/kafka-server.log" 2>/dev/null
    rm -rf "$B/kafka" # gigabytes after a default run; its log is kept in .bench/logs
  fi
  if [ -n "$pg_started" ]; then
    scripts/pg.sh stop "$B/pg" fast
    cp "$B/pg/server.log" "$B/logs/postgresql.log" 2>/dev/null
    rm -rf "$B/pg"
  fi
  rm -rf "$B/tmp" "$B/data"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Two consecutive free loopback ports (the broker's controller listens on PORT+1).
free_port() {
  .venv/bin/python - <<'PY'
import socket
for _ in range(200):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        p = s.getsockname()[1]
    if p > 65000:
        continue
    try:
        with socket.socket() as s2:
            s2.bind(("127.0.0.1", p + 1))
        print(p)
        break
    except OSError:
        continue
PY
}

pg_port=$(free_port)
echo "== PostgreSQL on 127.0.0.1:$pg_port (.bench/pg)"
pg_started=1
scripts/pg.sh start "$B/pg" "$pg_port"
# row commit times for the measurements: needs a restart to take effect
echo "track_commit_timestamp = on" >>"$B/pg/data/postgresql.conf"
# what PostgreSQL does in the background shows in .bench/logs/postgresql.log (a latency
# tail is read against it)
echo "log_autovacuum_min_duration = 0" >>"$B/pg/data/postgresql.conf"
echo "log_checkpoints = on" >>"$B/pg/data/postgresql.conf"
scripts/pg.sh stop "$B/pg" fast
scripts/pg.sh start "$B/pg" "$pg_port"
pg_pid=$(head -1 "$B/pg/data/postmaster.pid")

kafka_port=$(free_port)
echo "== Kafka broker on 127.0.0.1:$kafka_port (.bench/kafka)"
kafka_started=1
tests/kafka/broker.sh start "$B/kafka" "$kafka_port"
kafka_pid=$(cat "$B/kafka/pid")

echo "== benchmark"
# In the background so that the INT/TERM traps run at once (bash defers a trap until a
# foreground child exits); cleanup() then stops it with SIGTERM.
.venv/bin/python tests/bench/bench.py run --dir "$B" --pg-port "$pg_port" \
  --kafka-port "$kafka_port" --pg-pid "$pg_pid" --kafka-pid "$kafka_pid" &
bench_pid=$!
set +e
wait "$bench_pid"
rc=$?
set -e
bench_pid=
exit "$rc"
