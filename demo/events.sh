#!/usr/bin/env bash
# Prints sample ApexFlow CRM events, one Kafka record a line, as "key<TAB>value" for kcat -K'\t'.
# Round N (argument) gives originals across tenants, every 5th round a replay of an earlier
# journal row made by another tool (payload markers without eventsink's signature: it is
# journaled as a replay with replay_verified = false; real replays go through the API), and
# every 7th round a poison message or two.
set -euo pipefail
n=${1:-1}
tenants=(acme globex initech umbrella)
types=(lead.created lead.updated lead.qualified deal.won)
ts=$(date -u +%Y-%m-%dT%H:%M:%SZ)
for i in 0 1 2 3; do
  id=$((n * 4 + i))
  t=${tenants[$(( (n + i) % 4 ))]}
  ty=${types[$(( (n * 3 + i) % 4 ))]}
  printf 'lead-%d\t{"tenant_id":"%s","event_type":"%s","occurred_at":"%s","lead":{"id":"L-%d","name":"Lead %d","email":"lead%d@example.com","source":"webinar","score":%d},"owner":{"id":"U-%d","team":"emea"}}\n' \
    "$id" "$t" "$ty" "$ts" "$id" "$id" "$id" $(( (id * 37) % 100 )) $(( id % 9 ))
done
if (( n % 5 == 0 )); then
  printf 'lead-%d\t{"tenant_id":"acme","event_type":"lead.created","lead":{"id":"L-%d"},"_replayed_from_event_id":%d,"_replay_source":"crm-import"}\n' \
    "$n" "$n" $(( n / 5 ))
fi
if (( n % 7 == 0 )); then
  printf 'poison-%d\t{"tenant_id":"acme","event_type":"lead.created",\n' "$n"          # truncated JSON
  printf 'poison-%d\t{"event_type":"lead.created","lead":{"id":"L-0"}}\n' "$n"         # no tenant
fi
