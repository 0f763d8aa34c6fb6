"""A backfill (CONTRACT 9.5: direct INSERTs of historical rows work, any received_at): the
seed's own event_journal imported with the SQL of docs/OPERATOR_QUICKREF.md, keeping its
ids, then the service journals new events after them and the API serves the old ones."""

from __future__ import annotations

import json
import re
from pathlib import Path

from apihelpers import api_for, ok_json
from harness import event_records, make_event, query, run_cli, scalar, wait_rows

DOC = Path(__file__).resolve().parents[2] / "docs" / "OPERATOR_QUICKREF.md"


def _import_sql() -> str:
    blocks = re.findall(r"```sql\n(-- backfill: the seed's event_journal.*?)```", DOC.read_text(),
                        flags=re.S)
    assert len(blocks) == 1, "docs/OPERATOR_QUICKREF.md lost its backfill block"
    return blocks[0]


def test_the_seeds_journal_imports_keeping_its_ids(kafka, db, topic, sink, sink_factory_offline):
    conf = sink_factory_offline.write_config(topics=[topic], dsn=db)
    assert run_cli("migrate", "-c", str(conf)).returncode == 0
    query(db, "CREATE TABLE seed_event_journal (id bigint PRIMARY KEY, tenant_id text, topic text,"
              " payload jsonb, received_at timestamptz, replay_count int DEFAULT 0,"
              " replay_source text)")
    # 120 days of history with gaps in the ids; every 10th a replay of the one two before
    # (the same tenant), and 95 one of 94 (another tenant: not linked, CONTRACT 9.2)
    for i in list(range(1, 50)) + list(range(60, 120)):
        ev = make_event(i, tenant="acme" if i % 2 else "initech")
        replay = i % 10 == 0 or i == 95
        if replay:
            ev["_replayed_from_event_id"] = i - 2 if i != 95 else 94
            ev["_replay_source"] = "seed-tool"
        query(db, "INSERT INTO seed_event_journal VALUES (%s, %s, %s, %s,"
                  " now() - make_interval(days => 121 - %s), %s, %s)",
              (i, ev["tenant_id"], topic, json.dumps(ev), i, 1 if replay else 0,
               "seed-tool" if replay else None))
    query(db, _import_sql())

    seed = {r[0]: r[1] for r in query(db, "SELECT id, payload FROM seed_event_journal")}
    got = {r[0]: r[1] for r in query(db, "SELECT id, payload FROM event_journal")}
    assert got == seed  # every row, under its own id
    oldest = scalar(db, "SELECT min(received_at) FROM event_journal")
    assert scalar(db, "SELECT now() - %s::timestamptz > interval '119 days'", (oldest,))

    s = sink(topics=[topic], dsn=db)
    api = api_for(s)
    e42 = ok_json(api.get("/events/42"))
    assert e42["payload"] == seed[42] and e42["replay_count"] == 0
    lin = ok_json(api.get("/events/70/lineage"))
    assert [a["id"] for a in lin["ancestors"]] == [68], lin
    assert ok_json(api.get("/events/95"))["replayed_from_event_id"] is None
    assert ok_json(api.get("/events/70"))["replay_verified"] is False

    # new events get ids after the imported ones
    kafka.produce(topic, event_records([make_event(1000 + i, tenant="acme") for i in range(5)]))
    wait_rows(db, "SELECT count(*) FROM event_journal WHERE kafka_partition >= 0", 5, sinks=[s])
    assert scalar(db, "SELECT min(id) FROM event_journal WHERE kafka_partition >= 0") > 119
    # range replays see the history: by time and by id
    r = ok_json(api.post("/replay/range", json={"start": "2000-01-01T00:00:00Z",
                                                "end": "2100-01-01T00:00:00Z", "dry_run": True}))
    assert r["matched"] == scalar(db, "SELECT count(*) FROM event_journal WHERE replay_count = 0")
    r = ok_json(api.post("/replay/range", json={"from_id": 40, "to_id": 65, "dry_run": True}))
    assert r["matched"] == 9 + 6 - 1  # 40..49 and 60..65, less the replay 40 and 60
