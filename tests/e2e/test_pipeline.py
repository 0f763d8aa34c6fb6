"""End-to-end tests of eventsink: Kafka in, PostgreSQL out (CONTRACT sections 1-4, 6, 8).

Every test gets a fresh database and fresh topics on the session's PostgreSQL server and
Kafka broker, and asserts outcomes (rows, column values, exit codes, log lines), never
elapsed time. Waits are generous upper bounds so that sanitizer builds pass too."""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

import harness
from harness import (PERSISTED_RE, PERSISTED_REPLAY_RE, event_records, event_stream,
                     make_event, query, query_dicts, run_cli, scalar, spawn_cli, wait_rows)

JOURNAL_COUNT = "SELECT count(*) FROM event_journal"
DLQ_COUNT = "SELECT count(*) FROM dead_letter_queue"
SQL_DIR = harness.REPO / "sql"

# A policy that also finds the tenant and the event type in headers, for events whose
# payload is not a JSON object (header-only replay markers, CONTRACT section 4).
HEADER_TENANT_POLICY = """
return {
  describe = function(ev)
    local p = ev.payload
    if type(p) == "table" and type(p.tenant_id) == "string" then
      local t = p.event_type
      if type(t) ~= "string" then t = p.type end
      if type(t) ~= "string" then t = nil end
      return p.tenant_id, t
    end
    local h = ev.headers or {}
    return h["x-tenant-id"], h["x-event-type"]
  end,
}
"""


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------

def positions(dsn: str, table: str, topic: str) -> list[tuple[int, int]]:
    return [(p, o) for p, o in query(
        dsn, f"SELECT kafka_partition, kafka_offset FROM {table} WHERE topic = %s", (topic,))]


def assert_exactly_once(dsn: str, topic: str, produced: list[tuple[int, int]]) -> None:
    """Every produced (partition, offset) is in journal + DLQ exactly once, nothing else."""
    journal = positions(dsn, "event_journal", topic)
    dlq = positions(dsn, "dead_letter_queue", topic)
    both = journal + dlq
    dupes = [pos for pos, n in Counter(both).items() if n > 1]
    assert not dupes, f"{len(dupes)} Kafka positions stored more than once, e.g. {dupes[:5]}"
    missing = set(produced) - set(both)
    extra = set(both) - set(produced)
    assert not missing, f"{len(missing)} produced records are missing, e.g. {sorted(missing)[:5]}"
    assert not extra, f"{len(extra)} stored positions were never produced, e.g. {sorted(extra)[:5]}"
    assert len(both) == len(produced)


def journal_rows(dsn: str, topic: str) -> dict[tuple[int, int], dict]:
    rows = query_dicts(dsn, "SELECT * FROM event_journal WHERE topic = %s", (topic,))
    return {(r["kafka_partition"], r["kafka_offset"]): r for r in rows}


def dlq_rows(dsn: str, topic: str) -> dict[tuple[int, int], dict]:
    rows = query_dicts(dsn, "SELECT * FROM dead_letter_queue WHERE topic = %s", (topic,))
    return {(r["kafka_partition"], r["kafka_offset"]): r for r in rows}


def header_dict(headers) -> dict | None:
    if not headers:
        return None
    return {k: v.decode() for k, v in headers}


def committed_vs_stored(kafka, dsn, group_id, topic, partitions=4):
    """Checks that the group's committed offset of each partition is exactly the end of
    what is stored: every record below it is stored, nothing at or above it is.
    Returns the number of records the commits cover."""
    committed = kafka.committed_offsets(group_id, topic, partitions)
    stored = Counter(p for p, _ in positions(dsn, "event_journal", topic)
                     + positions(dsn, "dead_letter_queue", topic))
    top = {p: o for p, o in query(dsn, """
        SELECT kafka_partition, max(kafka_offset) FROM (
          SELECT kafka_partition, kafka_offset FROM event_journal WHERE topic = %s
          UNION ALL
          SELECT kafka_partition, kafka_offset FROM dead_letter_queue WHERE topic = %s) x
        GROUP BY 1""", (topic, topic))}
    covered = 0
    for p in range(partitions):
        c = committed[p] if committed[p] >= 0 else 0
        n = stored.get(p, 0)
        assert c == n, (f"partition {p}: committed offset {committed[p]} but {n} records stored "
                        f"(offsets 0..{top.get(p)}); committed per partition {committed}")
        if n:
            assert top[p] == n - 1
        covered += c
    return covered


class BackgroundProducer(threading.Thread):
    """Produces records in chunks from a thread; `gate` (an Event) holds back the chunks
    from index `gate_at` on until it is set."""

    def __init__(self, kafka, topic, records, chunk=500, gate=None, gate_at=None):
        super().__init__(daemon=True)
        self.kafka, self.topic, self.records, self.chunk = kafka, topic, records, chunk
        self.gate, self.gate_at = gate, gate_at
        self.positions: list = []
        self.error: BaseException | None = None

    def run(self):
        try:
            p = self.kafka.producer()
            for i in range(0, len(self.records), self.chunk):
                if self.gate is not None and i >= self.gate_at:
                    self.gate.wait(harness.scaled(300))
                self.positions += self.kafka.produce(self.topic, self.records[i:i + self.chunk],
                                                     producer=p)
        except BaseException as e:  # noqa: BLE001 - re-raised by result()
            self.error = e

    def result(self, timeout=300):
        self.join(harness.scaled(timeout))
        assert not self.is_alive(), "the producer thread did not finish"
        if self.error:
            raise self.error
        return self.positions


def write_policy(tmp_path: Path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


# --------------------------------------------------------------------------------------
# the pipeline
# --------------------------------------------------------------------------------------

def test_ten_thousand_events_land_in_the_journal(kafka, db, topic, sink):
    events = list(event_stream(10_000, seed=11))
    records = event_records(events)
    s = sink(topics=[topic], dsn=db)
    produced = kafka.produce(topic, records)

    wait_rows(db, JOURNAL_COUNT, 10_000, timeout=300, sinks=[s])
    assert scalar(db, DLQ_COUNT) == 0
    assert_exactly_once(db, topic, produced)

    rows = journal_rows(db, topic)
    for (key, value, headers, _), ev, pos in zip(records, events, produced):
        r = rows[pos]
        assert r["tenant_id"] == ev["tenant_id"]
        assert r["event_type"] == ev["event_type"]
        assert r["topic"] == topic
        assert r["event_key"] == key
        assert r["headers"] == header_dict(headers)
        assert r["payload"] == ev
        assert r["replay_count"] == 0
        assert r["replay_source"] is None
        assert r["replayed_from_event_id"] is None
        assert r["received_at"] is not None
    assert len({r["id"] for r in rows.values()}) == 10_000

    # one "Persisted <type> for tenant <tenant>" line per event (CONTRACT section 8)
    s.wait_log(r"Persisted ", timeout=60, count=10_000)
    logged = Counter(m.groups() for m in PERSISTED_RE.finditer(s.log_text()))
    expected = Counter((e["event_type"], e["tenant_id"]) for e in events)
    assert logged == expected
    assert not PERSISTED_REPLAY_RE.search(s.log_text())


def test_poison_events_go_to_the_dead_letter_queue(kafka, db, topic, sink):
    big = make_event(99_999, tenant="acme")
    big["data"]["notes"] = "x" * 6000  # well over kafka.max_message_bytes = 4096
    fits = make_event(99_998, tenant="globex")
    fits["data"]["notes"] = "y" * 3000  # under the limit: a good event
    poison = [
        (b'{"tenant_id": "acme", "event_type": "lead.created", "data": {', "invalid_json"),
        (b"lead created for acme", "invalid_json"),
        (b'{"tenant_id": "acme"} trailing', "invalid_json"),
        (b'{"tenant_id": "acme", "event_type": "lead.created", "name": "caf\xe9"}', "invalid_utf8"),
        (b'{"tenant_id": "acme", "event_type": "lead.created", "name": "\xc0\xaf"}', "invalid_utf8"),
        (b'{"tenant_id": "acme", "event_type": "lead.created", "name": "\xed\xa0\x80"}',
         "invalid_utf8"),
        (b'{"tenant_id": "acme", "event_type": "lead.created", "note": "a\\u0000b"}',
         "nul_character"),
        (b'{"tenant_id": "acme", "event_type": "lead.updated", "data": {"x": ["\\u0000"]}}',
         "nul_character"),
        (json.dumps(big).encode(), "too_large"),
        (json.dumps({"event_type": "lead.created", "data": {"lead_id": "l1"}}).encode(),
         "missing_tenant"),
        (b"[1, 2, 3]", "missing_tenant"),
        (b'{"tenantId": "acme", "event_type": "deal.won"}', "missing_tenant"),
    ]
    good = list(event_stream(300, seed=12)) + [fits]
    records, kinds = [], []  # kinds[i]: None for a good event, else the expected reason
    gi = iter(good)
    for i in range(len(good) + len(poison)):
        if i % 25 == 7 and i // 25 < len(poison):
            value, reason = poison[i // 25]
            records.append((f"poison-{i}", value, [("source", b"fuzzer"), ("n", str(i).encode())], None))
            kinds.append(reason)
        else:
            ev = next(gi, None)
            if ev is None:
                continue
            records.append(event_records([ev])[0])
            kinds.append(None)
    assert Counter(k for k in kinds if k) == Counter(r for _, r in poison)

    s = sink(topics=[topic], dsn=db, extra_config="c.kafka.max_message_bytes = 4096")
    produced = kafka.produce(topic, records)

    wait_rows(db, DLQ_COUNT, len(poison), timeout=180, sinks=[s])
    wait_rows(db, JOURNAL_COUNT, len(good), timeout=180, sinks=[s])
    assert_exactly_once(db, topic, produced)

    journal, dlq = journal_rows(db, topic), dlq_rows(db, topic)
    for rec, kind, pos in zip(records, kinds, produced):
        key, value, headers, _ = rec
        if kind is None:
            r = journal[pos]
            assert r["payload"] == json.loads(value)
            assert r["event_key"] == key
        else:
            assert pos in dlq, f"{value[:60]!r} ({kind}) is not in the DLQ"
            d = dlq[pos]
            assert d["reason"] == kind, f"{value[:60]!r}: reason {d['reason']!r}, expected {kind!r}"
            assert bytes(d["raw_payload"]) == value
            assert d["event_key"] == key
            assert d["headers"] == header_dict(headers)
            assert d["error"], f"DLQ row for {kind} has no error detail"
            assert d["status"] == "pending"
    # the service went on with the good events and logged them
    assert len(PERSISTED_RE.findall(s.log_text())) == len(good)


def test_db_reject_dead_letters_only_the_rejected_event(kafka, pg, db, topic, sink,
                                                       sink_factory_offline):
    conf = sink_factory_offline.write_config(topics=[topic], dsn=db)
    r = run_cli("migrate", "-c", str(conf))
    assert r.returncode == 0, r.stderr
    query(db, "ALTER TABLE event_journal ADD CONSTRAINT no_reject "
              "CHECK (tenant_id <> 'reject-me')")

    events = list(event_stream(60, seed=13))
    bad = make_event(5000, tenant="reject-me", event_type="lead.created")
    batch = events[:30] + [bad] + events[30:]
    # all on one partition and produced before the service starts: one batch
    records = [(k, v, h, 1) for k, v, h, _ in event_records(batch)]
    produced = kafka.produce(topic, records)

    s = sink(topics=[topic], dsn=db)
    wait_rows(db, DLQ_COUNT, 1, timeout=120, sinks=[s])
    wait_rows(db, JOURNAL_COUNT, 60, timeout=120, sinks=[s])
    d = query_dicts(db, "SELECT * FROM dead_letter_queue")[0]
    assert d["reason"] == "db_reject"
    assert (d["kafka_partition"], d["kafka_offset"]) == produced[30]
    assert bytes(d["raw_payload"]) == records[30][1]
    assert "no_reject" in (d["error"] or ""), d["error"]
    assert scalar(db, "SELECT count(*) FROM event_journal WHERE tenant_id = 'reject-me'") == 0
    assert_exactly_once(db, topic, produced)

    # and it goes on consuming afterwards
    more = kafka.produce(topic, event_records(event_stream(10, seed=14)))
    wait_rows(db, JOURNAL_COUNT, 70, timeout=120, sinks=[s])
    assert_exactly_once(db, topic, produced + more)
    assert len(PERSISTED_RE.findall(s.log_text())) == 70


def _wait_journal_row(dsn, topic, pos, sink, timeout=120):
    def get():
        harness._check_alive([sink])
        rows = query_dicts(dsn, "SELECT * FROM event_journal WHERE topic = %s AND "
                                "kafka_partition = %s AND kafka_offset = %s",
                           (topic, pos[0], pos[1]))
        return rows[0] if rows else None
    return harness.wait_for(get, timeout, what=f"journal row for {topic} {pos}")


def test_replay_markers_in_the_payload(kafka, db, topic, sink):
    s = sink(topics=[topic], dsn=db)
    originals = [make_event(i, tenant="acme", event_type="lead.created") for i in range(3)]
    pos = kafka.produce(topic, event_records(originals))
    rows = [_wait_journal_row(db, topic, p, s) for p in pos]
    o1, o2, o3 = rows

    # payload markers only
    r1_payload = dict(originals[0], _replayed_from_event_id=o1["id"],
                      _replay_source="operator_api", _replay_job_id=7)
    # payload markers and the same markers as headers (what the service itself produces)
    r2_payload = dict(originals[1], _replayed_from_event_id=o2["id"],
                      _replay_source="scheduled", _replay_job_id=8)
    r2_headers = [("x-replayed-from-event-id", str(o2["id"]).encode()),
                  ("x-replay-source", b"scheduled"), ("x-replay-job-id", b"8")]
    # the id as a decimal string
    r3_payload = dict(originals[2], _replayed_from_event_id=str(o3["id"]),
                      _replay_source="webhook", _replay_job_id=9)
    p1, p2, p3 = kafka.produce(topic, [("k1", json.dumps(r1_payload).encode(), None, None),
                                       ("k2", json.dumps(r2_payload).encode(), r2_headers, None),
                                       ("k3", json.dumps(r3_payload).encode(), None, None)])
    r1, r2, r3 = (_wait_journal_row(db, topic, p, s) for p in (p1, p2, p3))
    for r, parent, src, payload in ((r1, o1, "operator_api", r1_payload),
                                    (r2, o2, "scheduled", r2_payload),
                                    (r3, o3, "webhook", r3_payload)):
        assert r["replay_count"] == 1
        assert r["replay_source"] == src
        assert r["replayed_from_event_id"] == parent["id"]
        assert r["tenant_id"] == "acme" and r["event_type"] == "lead.created"
        assert r["payload"] == payload  # the markers stay in the payload
        s.wait_log(rf"Persisted REPLAYED lead\.created for tenant acme \(from event {parent['id']}\)",
                   timeout=30)

    # a replay of a replay
    rr_payload = dict(originals[0], _replayed_from_event_id=r1["id"],
                      _replay_source="operator_api", _replay_job_id=10)
    (prr,) = kafka.produce(topic, [("k1", json.dumps(rr_payload).encode(), None, None)])
    rr = _wait_journal_row(db, topic, prr, s)
    assert rr["replay_count"] == 2
    assert rr["replay_source"] == "operator_api"
    assert rr["replayed_from_event_id"] == r1["id"]
    s.wait_log(rf"Persisted REPLAYED lead\.created for tenant acme \(from event {r1['id']}\)",
               timeout=30)

    # the originals are untouched
    for o in rows:
        again = query_dicts(db, "SELECT * FROM event_journal WHERE id = %s", (o["id"],))[0]
        assert again["replay_count"] == 0 and again["replay_source"] is None
    assert scalar(db, DLQ_COUNT) == 0
    assert len(PERSISTED_REPLAY_RE.findall(s.log_text())) == 4
    assert len(PERSISTED_RE.findall(s.log_text())) == 3


def test_replay_markers_in_headers_only(kafka, db, topic, sink, tmp_path):
    policy = write_policy(tmp_path, "header_tenant.lua", HEADER_TENANT_POLICY)
    s = sink(topics=[topic], dsn=db, policies=[policy])
    original = make_event(1, tenant="globex", event_type="deal.won")
    (po,) = kafka.produce(topic, event_records([original]))
    o = _wait_journal_row(db, topic, po, s)
    assert o["replay_count"] == 0

    def hdrs(parent_id, source, job):
        return [("x-replayed-from-event-id", str(parent_id).encode()),
                ("x-replay-source", source.encode()), ("x-replay-job-id", str(job).encode()),
                ("x-tenant-id", b"globex"), ("x-event-type", b"deal.won")]

    # non-object JSON payloads: an array and a string
    (p1,) = kafka.produce(topic, [("k", b'["deal.won", 42]', hdrs(o["id"], "operator_api", 7), None)])
    r1 = _wait_journal_row(db, topic, p1, s)
    assert r1["replay_count"] == 1
    assert r1["replay_source"] == "operator_api"
    assert r1["replayed_from_event_id"] == o["id"]
    assert r1["tenant_id"] == "globex" and r1["event_type"] == "deal.won"
    assert r1["payload"] == ["deal.won", 42]
    s.wait_log(rf"Persisted REPLAYED deal\.won for tenant globex \(from event {o['id']}\)", timeout=30)

    (p2,) = kafka.produce(topic, [("k", b'"closed won"', hdrs(r1["id"], "automated", 8), None)])
    r2 = _wait_journal_row(db, topic, p2, s)
    assert r2["replay_count"] == 2
    assert r2["replay_source"] == "automated"
    assert r2["replayed_from_event_id"] == r1["id"]
    assert r2["payload"] == "closed won"
    assert r2["headers"]["x-replay-source"] == "automated"
    s.wait_log(rf"Persisted REPLAYED deal\.won for tenant globex \(from event {r1['id']}\)", timeout=30)
    assert scalar(db, DLQ_COUNT) == 0


def test_kill_9_mid_stream_then_restart_loses_and_duplicates_nothing(kafka, db, topic, sink):
    total = 20_000
    records = event_records(event_stream(total, seed=21))
    s = sink(topics=[topic], dsn=db, batch={"max_events": 500, "max_wait_ms": 50})
    killed = threading.Event()
    prod = BackgroundProducer(kafka, topic, records, chunk=500, gate=killed, gate_at=12_000)
    prod.start()
    try:
        harness.wait_at_least(db, JOURNAL_COUNT, 3000, timeout=300, sinks=[s])
        rc = s.kill9()
        assert rc == -signal.SIGKILL
        stored_at_kill = harness.count_or_zero(db, JOURNAL_COUNT)
    finally:
        killed.set()
    assert stored_at_kill < total  # it was killed mid-stream
    s.restart()
    produced = prod.result()
    assert len(produced) == total
    wait_rows(db, f"SELECT (SELECT count(*) FROM event_journal) + "
                  f"(SELECT count(*) FROM dead_letter_queue)", total, timeout=600, sinks=[s])
    assert_exactly_once(db, topic, produced)
    assert scalar(db, DLQ_COUNT) == 0
    rows = journal_rows(db, topic)
    for rec, pos in zip(records, produced):
        assert rows[pos]["payload"] == json.loads(rec[1])
    assert s.terminate() == 0


def test_postgres_down_for_ten_seconds_loses_nothing(kafka, pg, db, topic, sink):
    first = event_records(event_stream(6000, seed=31))
    second = event_records(event_stream(6000, seed=32, start=6000))
    s = sink(topics=[topic], dsn=db, allow_errors=True)  # it may well log errors meanwhile
    prod = BackgroundProducer(kafka, topic, first, chunk=500)
    prod.start()
    harness.wait_at_least(db, JOURNAL_COUNT, 1500, timeout=300, sinks=[s])
    pg.stop("fast")
    try:
        produced = prod.result()
        produced += kafka.produce(topic, second)  # produced while PostgreSQL is down
        time.sleep(10)
        assert s.alive(), f"eventsink exited while PostgreSQL was down:\n{harness.tail(s.log_text())}"
    finally:
        pg.start()
    wait_rows(db, f"SELECT (SELECT count(*) FROM event_journal) + "
                  f"(SELECT count(*) FROM dead_letter_queue)", 12_000, timeout=600, sinks=[s])
    assert_exactly_once(db, topic, produced)
    assert scalar(db, DLQ_COUNT) == 0
    assert s.alive()
    assert s.terminate() == 0


def test_two_instances_share_the_work_exactly_once(kafka, db, topic, sink):
    a = sink(topics=[topic], dsn=db)
    b = sink(topics=[topic], dsn=db, group_id=sink.group_id)  # the same consumer group
    produced = []
    seed = 40
    for _ in range(30):
        seed += 1
        produced += kafka.produce(topic, event_records(event_stream(400, seed=seed,
                                                                    start=len(produced))))
        wait_rows(db, JOURNAL_COUNT, len(produced), timeout=300, sinks=[a, b])
        if a.persisted_count() and b.persisted_count() and len(produced) >= 2000:
            break
    assert a.persisted_count() > 0, "the first instance persisted nothing"
    assert b.persisted_count() > 0, "the second instance persisted nothing"
    assert_exactly_once(db, topic, produced)
    # each event was persisted (and logged) by one instance only
    assert a.persisted_count() + b.persisted_count() == len(produced)
    assert a.terminate() == 0
    assert b.terminate() == 0


def test_two_groups_writing_the_same_records_at_once_store_each_once(kafka, db, topic, sink):
    """No unique index guards the Kafka position (the journal is partitioned by time): two
    services of different consumer groups read the same records at the same time, as a
    consumer that lost its partition and the one that got it do, and race on every batch.
    The sink's stored position (sink_offsets), locked by each batch, is the fence: each
    record is journaled once, and each record that goes to the DLQ (partitioned by month,
    so its Kafka position is no unique index either) is dead-lettered once
    (docs/GUARANTEES.md section 2)."""
    from apihelpers import metric, scrape, wait_caught_up
    groups = [f"{sink.group_id}-a", f"{sink.group_id}-b"]
    a, b = (sink(topics=[topic], dsn=db, group_id=g) for g in groups)
    for s in (a, b):
        s.wait_log(r"partition\(s\) assigned", timeout=60)
    # both read each record as it arrives
    produced = []
    for k in range(6):
        records = event_records(event_stream(1000, seed=61 + k, start=len(produced)))
        for i in range(k, len(records), 9):  # every ninth is not JSON: the DLQ's
            records[i] = (records[i][0], b'{"broken": ' + str(i).encode(), None, None)
        produced += kafka.produce(topic, records)
    for g in groups:
        wait_caught_up(kafka, g, [topic], timeout=300, sinks=[a, b])
    assert_exactly_once(db, topic, produced)
    poison = len([i for k in range(6) for i in range(k, 1000, 9)])
    assert scalar(db, "SELECT count(*) FROM dead_letter_queue WHERE topic = %s",
                  (topic,)) == poison
    # every row was reported persisted once, by one of the two
    assert a.persisted_count() + b.persisted_count() == len(produced) - poison
    ends = {r[0]: r[1] for r in query(db, "SELECT kafka_partition, max(kafka_offset) + 1"
                                          " FROM event_journal WHERE topic = %s GROUP BY 1",
                                      (topic,))}
    stored = {r[0]: r[1] for r in query(db, "SELECT kafka_partition, next_offset FROM"
                                            " sink_offsets WHERE topic = %s", (topic,))}
    assert stored == ends
    conflicts = sum(metric(scrape(s), "eventsink_write_conflicts_total") for s in (a, b))
    print(f"persisted by a: {a.persisted_count()}, by b: {b.persisted_count()}; batches "
          f"written again after the other group's commit: {conflicts:.0f}")
    assert a.terminate() == 0 and b.terminate() == 0


def test_sigterm_commits_everything_and_exits_0(kafka, db, topic, sink):
    records = event_records(event_stream(3000, seed=51))
    s = sink(topics=[topic], dsn=db)
    produced = kafka.produce(topic, records)
    wait_rows(db, JOURNAL_COUNT, 3000, timeout=300, sinks=[s])
    ids_before = {r[0] for r in query(db, "SELECT id FROM event_journal")}
    assert s.terminate() == 0
    assert committed_vs_stored(kafka, db, sink.group_id, topic) == 3000

    s.restart()
    more = kafka.produce(topic, event_records(event_stream(100, seed=52, start=3000)))
    wait_rows(db, JOURNAL_COUNT, 3100, timeout=300, sinks=[s])
    assert_exactly_once(db, topic, produced + more)
    ids_after = {r[0] for r in query(db, "SELECT id FROM event_journal")}
    assert ids_before <= ids_after
    # the second run persisted the 100 new events and none of the old ones
    assert s.persisted_count(run=2) == 100
    assert s.terminate() == 0
    assert committed_vs_stored(kafka, db, sink.group_id, topic) == 3100


def test_sigterm_mid_batch_finishes_the_batch_and_commits_it(kafka, db, topic, sink):
    total = 20_000
    records = event_records(event_stream(total, seed=61))
    produced = kafka.produce(topic, records)  # a backlog, so that SIGTERM lands mid-stream
    s = sink(topics=[topic], dsn=db, batch={"max_events": 500, "max_wait_ms": 50})
    harness.wait_at_least(db, JOURNAL_COUNT, 1000, timeout=300, sinks=[s])
    assert s.terminate() == 0
    first_run = harness.count_or_zero(db, JOURNAL_COUNT)
    assert committed_vs_stored(kafka, db, sink.group_id, topic) == first_run
    assert s.persisted_count(run=1) == first_run

    s.restart()
    wait_rows(db, JOURNAL_COUNT, total, timeout=600, sinks=[s])
    assert_exactly_once(db, topic, produced)
    assert s.persisted_count(run=2) == total - first_run
    assert s.terminate() == 0


def test_sigint_stops_like_sigterm(kafka, db, topic, sink):
    s = sink(topics=[topic], dsn=db)
    produced = kafka.produce(topic, event_records(event_stream(200, seed=71)))
    wait_rows(db, JOURNAL_COUNT, 200, timeout=120, sinks=[s])
    s.signal(signal.SIGINT)
    assert s.terminate() == 0  # already stopping; this only waits
    assert committed_vs_stored(kafka, db, sink.group_id, topic) == 200
    assert_exactly_once(db, topic, produced)


def test_json_log_format(kafka, db, topic, sink):
    s = sink(topics=[topic], dsn=db, overrides={"log": {"level": "info", "format": "json"}})
    ev = make_event(1, tenant="acme", event_type="lead.created")
    (pos,) = kafka.produce(topic, event_records([ev]))
    o = _wait_journal_row(db, topic, pos, s)
    replay = dict(ev, _replayed_from_event_id=o["id"], _replay_source="operator_api",
                  _replay_job_id=7)
    (rpos,) = kafka.produce(topic, [("k", json.dumps(replay).encode(), None, None)])
    _wait_journal_row(db, topic, rpos, s)
    s.wait_log(r"Persisted REPLAYED", timeout=30)
    assert s.terminate() == 0
    objs = []
    for line in s.log_text().splitlines():
        if not line.strip():
            continue
        obj = json.loads(line)  # every line is one JSON object
        assert isinstance(obj, dict), line
        objs.append(obj)
    texts = [json.dumps(o) for o in objs]
    assert any("Persisted lead.created for tenant acme" in t for t in texts), texts
    assert any(f"Persisted REPLAYED lead.created for tenant acme (from event {o['id']})" in t
               for t in texts), texts
    assert any("started: consuming" in t for t in texts)


# --------------------------------------------------------------------------------------
# the command line
# --------------------------------------------------------------------------------------

UNREACHABLE_DSN = "host=127.0.0.1 port=9 dbname=nowhere user=eventsink connect_timeout=2"


def offline_conf(factory, extra=None, policies=None, dsn=UNREACHABLE_DSN, name="sink"):
    return factory.write_config(topics=["apexflow.leads.created"], dsn=dsn,
                                brokers="127.0.0.1:9", extra_config=extra,
                                policies=policies, name=name)


def test_version_and_help():
    r = run_cli("--version")
    assert r.returncode == 0, r.stderr
    assert re.search(r"\d+\.\d+", r.stdout + r.stderr), r.stdout
    r = run_cli("--help")
    assert r.returncode == 0, r.stderr
    text = r.stdout + r.stderr
    for word in ("check", "migrate", "policy-eval"):
        assert word in text, f"--help does not mention {word}:\n{text}"


def test_check_accepts_a_good_configuration(sink_factory_offline):
    # neither Kafka nor PostgreSQL is reachable: check must not need them
    conf = offline_conf(sink_factory_offline)
    r = run_cli("check", "-c", str(conf))
    assert r.returncode == 0, r.stdout + r.stderr


def test_check_defaults_to_sink_conf_lua_and_resolves_relative_paths(sink_factory_offline,
                                                                     tmp_path):
    conf = offline_conf(sink_factory_offline)  # .../sink/sink.conf.lua
    (conf.parent / "pol").mkdir()
    (conf.parent / "pol" / "mine.lua").write_text(HEADER_TENANT_POLICY)
    text = conf.read_text().replace("return c\n", 'c.policies = { "pol/mine.lua" }\nreturn c\n')
    conf.write_text(text)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # -c with a relative policy path, run from another folder
    r = run_cli("check", "-c", str(conf), cwd=elsewhere)
    assert r.returncode == 0, r.stdout + r.stderr
    # no -c: ./sink.conf.lua
    r = run_cli("check", cwd=conf.parent)
    assert r.returncode == 0, r.stdout + r.stderr
    # no -c and no ./sink.conf.lua: a configuration error
    r = run_cli("check", cwd=elsewhere)
    assert r.returncode == 2, r.stdout + r.stderr


def test_check_names_unknown_keys_and_exits_2(sink_factory_offline):
    conf = offline_conf(sink_factory_offline, extra="c.kafka.bogus_option = 1")
    r = run_cli("check", "-c", str(conf))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "bogus_option" in r.stdout + r.stderr

    conf = offline_conf(sink_factory_offline, extra="c.frobnicate = true", name="other")
    r = run_cli("check", "-c", str(conf))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "frobnicate" in r.stdout + r.stderr


def test_check_rejects_a_broken_policy(sink_factory_offline, tmp_path):
    broken = write_policy(tmp_path, "broken.lua", "return { describe = function(ev) return ev. end }")
    conf = offline_conf(sink_factory_offline, policies=[broken])
    r = run_cli("check", "-c", str(conf))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "broken.lua" in r.stdout + r.stderr

    conf = offline_conf(sink_factory_offline, policies=[str(tmp_path / "missing.lua")], name="m")
    r = run_cli("check", "-c", str(conf))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "missing.lua" in r.stdout + r.stderr


def test_the_service_refuses_a_bad_configuration(sink_factory_offline):
    conf = offline_conf(sink_factory_offline, extra="c.batch = { max_events = 'lots' }")
    r = run_cli("-c", str(conf), timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "batch.max_events" in r.stdout + r.stderr


def _migration_files():
    return sorted(p.name for p in SQL_DIR.glob("[0-9][0-9][0-9]_*.sql"))


def _tables(dsn):
    return {r[0] for r in query(dsn, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def test_migrate_creates_the_schema_and_is_idempotent(db, sink_factory_offline):
    conf = offline_conf(sink_factory_offline, dsn=db)
    r = run_cli("migrate", "-c", str(conf))
    assert r.returncode == 0, r.stdout + r.stderr
    assert {"event_journal", "dead_letter_queue", "replay_jobs",
            "schema_migrations"} <= _tables(db)
    cols = {r[0] for r in query(db, "SELECT column_name FROM information_schema.columns "
                                    "WHERE table_name = 'event_journal'")}
    assert {"id", "tenant_id", "event_type", "topic", "kafka_partition", "kafka_offset",
            "event_key", "headers", "payload", "received_at", "replay_count", "replay_source",
            "replayed_from_event_id"} <= cols
    cols = {r[0] for r in query(db, "SELECT column_name FROM information_schema.columns "
                                    "WHERE table_name = 'dead_letter_queue'")}
    assert {"id", "topic", "kafka_partition", "kafka_offset", "event_key", "headers",
            "raw_payload", "reason", "error", "policy_version", "attempts", "status",
            "created_at", "last_attempt_at", "next_attempt_at", "resolved_event_id"} <= cols
    applied = scalar(db, "SELECT count(*) FROM schema_migrations")
    assert applied == len(_migration_files())

    r = run_cli("migrate", "-c", str(conf))
    assert r.returncode == 0, r.stdout + r.stderr
    assert scalar(db, "SELECT count(*) FROM schema_migrations") == applied


def test_concurrent_migrations_do_not_fail(db, sink_factory_offline):
    conf = offline_conf(sink_factory_offline, dsn=db)
    procs = [spawn_cli("migrate", "-c", str(conf)) for _ in range(4)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=harness.scaled(120))
        outs.append((p.returncode, err.decode(errors="replace")))
    for rc, err in outs:
        assert rc == 0, err
        assert not harness.sanitizer_lines(err), err
    assert {"event_journal", "dead_letter_queue", "replay_jobs",
            "schema_migrations"} <= _tables(db)
    assert scalar(db, "SELECT count(*) FROM schema_migrations") == len(_migration_files())


def _find(d: dict, *names):
    """The first of names found in d or in a dict nested in d."""
    for n in names:
        if n in d:
            return d[n]
    for v in d.values():
        if isinstance(v, dict):
            r = _find(v, *names)
            if r is not None:
                return r
    return None


def test_policy_eval_prints_one_decision_per_event(db, sink_factory_offline, tmp_path):
    conf = offline_conf(sink_factory_offline, dsn=db)
    base = {"topic": "apexflow.leads.created", "partition": 0, "key": "lead_1", "headers": {}}
    good = make_event(1, tenant="acme", event_type="lead.created")
    events = [
        dict(base, offset=0, payload=good),
        dict(base, offset=1, payload={"event_type": "lead.created", "data": {}}),
        dict(base, offset=2, payload=dict(good, _replayed_from_event_id=41,
                                          _replay_source="operator_api", _replay_job_id=7)),
        dict(base, offset=3, payload={"tenant_id": "initech", "type": "deal.won"},
             headers={"x-replayed-from-event-id": "12", "x-replay-source": "scheduled"}),
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    r = run_cli("policy-eval", "-c", str(conf), str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [l for l in r.stdout.splitlines() if l.strip()]
    assert len(lines) == len(events), r.stdout
    d = [json.loads(l) for l in lines]
    assert all(isinstance(x, dict) for x in d)

    assert _find(d[0], "tenant_id", "tenant") == "acme"
    assert _find(d[0], "event_type") == "lead.created"
    assert _find(d[0], "route") == "journal"

    assert _find(d[1], "tenant_id", "tenant") is None
    assert _find(d[1], "route") == "dlq"
    assert _find(d[1], "reason") == "missing_tenant"

    assert _find(d[2], "tenant_id", "tenant") == "acme"
    assert _find(d[2], "route") == "journal"
    assert _find(d[2], "replay_source") == "operator_api"
    assert _find(d[2], "replayed_from_event_id") == 41

    assert _find(d[3], "tenant_id", "tenant") == "initech"
    assert _find(d[3], "event_type") == "deal.won"
    assert _find(d[3], "replay_source") == "scheduled"
    assert _find(d[3], "replayed_from_event_id") == 12

    # no side effects: the database was not touched
    assert _tables(db) == set()


def test_a_dead_lettered_record_read_again_after_a_policy_change_is_not_journaled_too(
        kafka, db, topic, sink, tmp_path):
    """Records dead-lettered under one policy (no tenant in the payload), then read again
    after the policy changed to one that accepts them (the tenant from a header) and the
    group's offsets were reset: each stays stored once, in the DLQ where it already is, and
    not a second time in the journal (the redelivery look-up covers both tables)."""
    from apihelpers import wait_caught_up
    payload_only = HEADER_TENANT_POLICY.replace(
        "local h = ev.headers or {}\n    return h[\"x-tenant-id\"], h[\"x-event-type\"]",
        "return nil")
    assert payload_only != HEADER_TENANT_POLICY
    policy = write_policy(tmp_path, "tenant.lua", payload_only)
    s = sink(topics=[topic], dsn=db, policies=[policy])
    records = [(f"k{i}", json.dumps({"n": i, "data": {}}).encode(),
                [("x-tenant-id", b"acme"), ("x-event-type", b"lead.created")], i % 4)
               for i in range(40)]
    produced = kafka.produce(topic, records)
    wait_rows(db, DLQ_COUNT, 40, sinks=[s])
    assert s.terminate() == 0
    kafka.commit_offsets(sink.group_id, topic, {p: 0 for p in range(4)})

    write_policy(tmp_path, "tenant.lua", HEADER_TENANT_POLICY)
    s.restart()
    more = kafka.produce(topic, records[:4])  # new records: the new policy journals them
    wait_caught_up(kafka, sink.group_id, [topic], timeout=120, sinks=[s])
    wait_rows(db, JOURNAL_COUNT, 4, sinks=[s])
    assert_exactly_once(db, topic, produced + more)
    assert scalar(db, DLQ_COUNT) == 40 and scalar(db, JOURNAL_COUNT) == 4
    assert s.terminate() == 0
