#!/usr/bin/env bash
# `make demo`: a private PostgreSQL under .demo/, eventsink on its embedded Kafka with the
# shipped sink.conf.lua and policies/default.lua, and a feeder producing sample ApexFlow
# CRM events (with a few replays and poison messages) through kcat.
# Runs until Ctrl-C, or for DEMO_SECONDS seconds when that is set.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
port=${DEMO_PG_PORT:-55432}
mkdir -p .demo
make -s all

scripts/pg.sh start .demo/pg "$port"
export EVENTSINK_DSN="host=127.0.0.1 port=$port dbname=eventsink user=eventsink"
# The embedded Kafka cluster keeps nothing between runs: its offsets start at 0 again. So
# the demo's database starts empty too, or the rows of an earlier run would stand at the
# Kafka positions of the new records.
echo "demo: starting with an empty database (the embedded Kafka cluster keeps nothing between runs; rm -rf .demo removes everything)"
psql -X -q -h 127.0.0.1 -p "$port" -U eventsink -d postgres -v ON_ERROR_STOP=1 \
  -c 'DROP DATABASE IF EXISTS eventsink' -c 'CREATE DATABASE eventsink OWNER eventsink' >/dev/null
export EVENTSINK_KAFKA_BROKERS=embedded

log=.demo/eventsink.log
: >"$log"
./build/eventsink -c sink.conf.lua >>"$log" 2>&1 &
sink=$!
cleanup() {
  kill -TERM "$sink" 2>/dev/null && wait "$sink" 2>/dev/null || true
  [ -n "${tailpid:-}" ] && kill "$tailpid" 2>/dev/null || true
  scripts/pg.sh stop .demo/pg
}
trap cleanup EXIT
trap 'exit 0' INT TERM

bootstrap=""
for _ in $(seq 1 100); do
  bootstrap=$(sed -n 's/.*listening at \([0-9.:,]*\).*/\1/p' "$log" | head -1)
  [ -n "$bootstrap" ] && break
  kill -0 "$sink" 2>/dev/null || { cat "$log"; echo "demo: eventsink exited" >&2; exit 1; }
  sleep 0.1
done
[ -n "$bootstrap" ] || { cat "$log"; echo "demo: no embedded Kafka address in the log" >&2; exit 1; }

cat <<TXT
== eventsink demo
   embedded Kafka:  $bootstrap   (produce with: kcat -b $bootstrap -t apexflow.leads.created -P)
   PostgreSQL:      psql "$EVENTSINK_DSN"
   log:             $log
   try:             psql "$EVENTSINK_DSN" -c 'SELECT id, tenant_id, event_type, replay_count, replay_source, replayed_from_event_id FROM event_journal ORDER BY id DESC LIMIT 10'
                    psql "$EVENTSINK_DSN" -c 'SELECT id, reason, error FROM dead_letter_queue'
TXT
tail -n +1 -f "$log" &
tailpid=$!

start=$(date +%s)
round=1
while :; do
  kill -0 "$sink" 2>/dev/null || { echo "demo: eventsink stopped; see $log" >&2; exit 1; }
  demo/events.sh "$round" | kcat -b "$bootstrap" -t apexflow.leads.created -P -K $'\t' 2>/dev/null || true
  round=$((round + 1))
  if [ -n "${DEMO_SECONDS:-}" ] && [ $(( $(date +%s) - start )) -ge "$DEMO_SECONDS" ]; then break; fi
  sleep 1
done
sleep 1
echo "== journal: $(psql -XtA "$EVENTSINK_DSN" -c 'SELECT count(*) FROM event_journal') rows" \
     "($(psql -XtA "$EVENTSINK_DSN" -c 'SELECT count(*) FROM event_journal WHERE replay_count > 0') replays)," \
     "dead-letter queue: $(psql -XtA "$EVENTSINK_DSN" -c 'SELECT count(*) FROM dead_letter_queue') rows"
