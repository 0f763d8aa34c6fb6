"""End-to-end tests of the DLQ and the replay jobs over years (CONTRACT 9.5, sql/012):
`dead_letter_queue`, `replay_jobs`, `replay_job_items` and `journal_replay_copies` are
partitioned by month of created_at (the items and copies by their job's), like the journal.

What they prove: rows written while their month had no partition wait in the default
partition and `eventsink retention` moves them to their months; with retention.dlq 30d and
retention.jobs 90d a month whose every entry (every job) is past retention is dropped whole
(DROP TABLE of the DLQ's month; of the jobs', items' and copies' months), a month that still
holds something to keep stays and only its expired rows are deleted; `--dry-run` says which
months would go and changes nothing; ingest with dead-lettered records and a range replay
go on while it runs; and the migration from version 11 keeps every row and id."""

from __future__ import annotations

import hashlib
import re
import threading

import psycopg

import harness
from apihelpers import api_for, ok_json, wait_caught_up, wait_job
from harness import event_records, event_stream, query, run_cli, scalar, wait_for
from test_journal_partitions import _cli_conf, _migrate, _note_drops, _other_sessions, _retention

TABLES = ("dead_letter_queue", "replay_jobs", "replay_job_items", "journal_replay_copies")
RETAIN = {"retention": {"dlq": "30d", "jobs": "90d"}}
KEEP = {"retention": {"dlq": "forever", "jobs": "forever"}}


def _month(n: int) -> str:
    """SQL: the third day of the month (UTC) n months before this one."""
    return f"(date_trunc('month', now(), 'UTC') - interval '{n} months' + interval '3 days')"


def _suffix(db: str, n: int) -> str:
    return scalar(db, f"SELECT to_char({_month(n)} AT TIME ZONE 'UTC', '_pYYYY_MM')")


def _conf(factory, db: str, over: dict, name: str):
    return factory.write_config(topics=["apexflow.leads.created"], dsn=db, overrides=over,
                                name=name)


def _dlq(db: str, n: int, month: int, status: str, decided: str | None, partition: int = 0):
    query(db, "INSERT INTO dead_letter_queue (topic, kafka_partition, kafka_offset, raw_payload,"
              " reason, error, status, created_at, decided_at)"
              f" SELECT 'old.topic', %s, %s * 100000 + g, 'x', 'invalid_json', 'x', %s,"
              f" {_month(month)}, {decided or 'NULL'} FROM generate_series(1, %s) g",
          (partition, month, status, n))


def _job(db: str, month: int, status: str, finished: str | None, items: int) -> int:
    """A job created `month` months ago, its items and one journaled copy per item."""
    j = scalar(db, "INSERT INTO replay_jobs (kind, replay_source, requested_by, params, status,"
                   f" total, created_at, finished_at) VALUES ('range', 'operator_api', 'ops',"
                   f" '{{}}', %s, %s, {_month(month)}, {finished or 'NULL'}) RETURNING id",
               (status, items))
    query(db, "INSERT INTO replay_job_items (job_id, seq, event_id, status, created_at)"
              " SELECT j.id, g, g, 'sent', j.created_at FROM replay_jobs j,"
              " generate_series(1, %s) g WHERE j.id = %s", (items, j))
    query(db, "INSERT INTO journal_replay_copies (replay_job_id, replayed_from_event_id,"
              " job_created_at) SELECT j.id, g, j.created_at FROM replay_jobs j,"
              " generate_series(1, %s) g WHERE j.id = %s", (items, j))
    return j


def _counts(db: str) -> dict[str, int]:
    return {t: scalar(db, f"SELECT count(*) FROM {t}") for t in TABLES}


def _defaults(db: str) -> dict[str, int]:
    return {t: scalar(db, f"SELECT count(*) FROM {t}_default") for t in TABLES}


def _size(db: str, parent: str) -> int:
    return scalar(db, "SELECT coalesce(sum(pg_total_relation_size(name::regclass)), 0)"
                      " FROM eventsink_partition_bounds WHERE parent = %s", (parent,))


def _deleted(db: str, parent: str) -> int:
    """Rows DELETE removed from the month partitions of parent there are now (the default
    one's were moved to their months)."""
    return scalar(db, "SELECT coalesce(sum(n_tup_del), 0) FROM pg_stat_user_tables WHERE relid"
                      " IN (SELECT name::regclass FROM eventsink_partition_bounds"
                      " WHERE parent = %s AND upper IS NOT NULL)", (parent,))


def _fill(db: str) -> dict:
    """Five months ago: 200 DLQ entries decided then (the month goes whole). Three months
    ago: 100 decided then and one still pending (the month stays, the 100 go). Now: 20
    resolved just now (stay). Jobs six months ago, all done then (the month goes whole);
    four months ago two done then and one still running (the month stays, the two go)."""
    _dlq(db, 200, 5, "resolved", _month(5) + " + interval '1 day'")
    _dlq(db, 100, 3, "discarded", _month(3) + " + interval '1 day'")
    _dlq(db, 1, 3, "pending", None, partition=1)
    _dlq(db, 20, 0, "resolved", "now()", partition=2)
    gone = [_job(db, 6, "done", _month(6) + " + interval '1 hour'", 3000) for _ in range(3)]
    straggle = [_job(db, 4, s, _month(4) + " + interval '1 hour'", 500)
                for s in ("done", "failed")]
    running = _job(db, 4, "running", None, 40)
    return {"gone": gone, "straggle": straggle, "running": running}


# --------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------

def test_whole_months_of_dlq_and_jobs_are_dropped(db, sink_factory_offline):
    _migrate(sink_factory_offline, db)
    ids = _fill(db)
    filled = _counts(db)
    # the old months have no partition: their rows wait in the default partitions
    assert _defaults(db) == {"dead_letter_queue": 301, "replay_jobs": 6,
                             "replay_job_items": 10040, "journal_replay_copies": 10040}

    # maintenance (with everything kept) moves the rows into their months, nothing lost
    out = _retention(_conf(sink_factory_offline, db, KEEP, "keep"))
    assert re.search(r"^partitions:\s+the rows of \d+ months moved", out, re.M), out
    assert _counts(db) == filled and not any(_defaults(db).values()), _defaults(db)
    five, three, six, four = (_suffix(db, n) for n in (5, 3, 6, 4))
    home = dict(query(db, "SELECT tableoid::regclass::text, count(*) FROM dead_letter_queue"
                          " GROUP BY 1"))
    assert home["dead_letter_queue" + five] == 200 and home["dead_letter_queue" + three] == 101
    assert scalar(db, "SELECT count(*) FROM replay_job_items i JOIN replay_jobs j"
                      " ON j.id = i.job_id AND j.created_at = i.created_at") == \
        filled["replay_job_items"]

    conf = _conf(sink_factory_offline, db, RETAIN, "retain")
    out = _retention(conf, "--dry-run")
    assert re.search(r"^dlq:\s+300 resolved or discarded entries older than 30d would go"
                     r" \(1 month partitions would be dropped whole", out, re.M), out
    assert re.search(r"^replay jobs: 5 ended longer ago than 90d, with 10000 items, would go"
                     r" \(1 month partitions would be dropped whole", out, re.M), out
    assert _counts(db) == filled, "a dry run changed something"

    _note_drops(db)
    sizes = {t: _size(db, t) for t in TABLES}
    month_sizes = {t: scalar(db, "SELECT pg_total_relation_size(%s)",
                             (t + (five if t == "dead_letter_queue" else six),)) for t in TABLES}
    sessions = _other_sessions(db)
    out = _retention(conf)
    assert re.search(r"^dlq:\s+300 .* removed \(1 month partitions dropped whole", out, re.M), out
    assert re.search(r"^replay jobs: 5 ended .* with 10000 items, removed \(1 month partitions"
                     r" dropped whole", out, re.M), out

    # the months past retention are gone as tables; the ones holding what stays are there
    dropped = ["dead_letter_queue" + five] + [t + six for t in TABLES[1:]]
    assert sorted(query(db, "SELECT tag, name FROM test_dropped")) == \
        sorted(("DROP TABLE", t) for t in dropped)
    assert all(scalar(db, "SELECT to_regclass(%s)", (t,)) is None for t in dropped)
    assert all(scalar(db, "SELECT to_regclass(%s)", (t + four,)) for t in TABLES[1:])
    assert scalar(db, "SELECT to_regclass(%s)", ("dead_letter_queue" + three,))
    assert {t: _size(db, t) <= sizes[t] - month_sizes[t] for t in TABLES} == \
        {t: True for t in TABLES}, (sizes, month_sizes)
    left = _counts(db)
    assert left == {"dead_letter_queue": 21, "replay_jobs": 1, "replay_job_items": 40,
                    "journal_replay_copies": 40}, left
    assert [r[0] for r in query(db, "SELECT id FROM replay_jobs")] == [ids["running"]]
    assert scalar(db, "SELECT count(*) FROM dead_letter_queue WHERE status = 'pending'") == 1
    # only what shared a month with something kept went by DELETE
    wait_for(lambda: _other_sessions(db) <= sessions, 60,
             what="the sessions of eventsink retention to end (their statistics flushed)")
    assert _deleted(db, "dead_letter_queue") == 100
    assert _deleted(db, "replay_job_items") == 1000
    assert _deleted(db, "replay_jobs") == 2

    out = _retention(conf)
    assert re.search(r"^dlq:\s+0 ", out, re.M) and "0 ended" in out, out


def test_ingest_and_a_replay_go_on_while_dlq_and_job_months_are_dropped(kafka, db, topic, sink,
                                                                       sink_factory_offline):
    _migrate(sink_factory_offline, db)
    _fill(db)
    _retention(_conf(sink_factory_offline, db, KEEP, "keep"))  # the old rows in their months
    s = sink(topics=[topic], dsn=db, overrides=KEEP)  # the CLI below applies retention
    api = api_for(s)
    produced = []
    for k in range(3):
        records = event_records(event_stream(600, seed=70 + k, start=len(produced)))
        for i in range(0, len(records), 10):
            records[i] = (records[i][0], b"not json " + str(i).encode(), None, None)
        produced += kafka.produce(topic, records)
    wait_caught_up(kafka, sink.group_id, [topic], timeout=300, sinks=[s])

    more: list = []
    errors: list = []

    def produce():
        try:
            for k in range(5):
                records = event_records(event_stream(400, seed=80 + k,
                                                     start=len(produced) + len(more)))
                for i in range(0, len(records), 10):
                    records[i] = (records[i][0], b"not json " + str(i).encode(), None, None)
                more.extend(kafka.produce(topic, records))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    lo, hi = (scalar(db, f"SELECT to_char((now() {d}) AT TIME ZONE 'UTC',"
                         " 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')") for d in ("- interval '1 day'",
                                                                        "+ interval '1 hour'"))
    job = ok_json(api.post("/replay/range", json={"start": lo, "end": hi, "topic": topic,
                                                  "confirm": True,
                                                  "reason": "during retention"}), 202)["job_id"]
    t = threading.Thread(target=produce)
    t.start()
    out = _retention(_conf(sink_factory_offline, db, RETAIN, "retain"))
    t.join(timeout=harness.scaled(300))
    assert not t.is_alive() and not errors, errors
    assert re.search(r"^dlq:\s+300 .* removed \(1 month partitions dropped whole", out, re.M), out
    done = wait_job(api, job, timeout=300)
    assert done["status"] == "done" and done["failed"] == 0, done
    wait_caught_up(kafka, sink.group_id, [topic], timeout=300, sinks=[s])

    positions = query(db, "SELECT kafka_partition, kafka_offset FROM event_journal WHERE topic"
                          " = %s AND replay_count = 0 UNION ALL SELECT kafka_partition,"
                          " kafka_offset FROM dead_letter_queue WHERE topic = %s",
                      (topic, topic))
    assert sorted(positions) == sorted(produced + more), "a record lost or stored twice"
    assert scalar(db, "SELECT count(*) FROM dead_letter_queue WHERE topic = %s", (topic,)) == \
        len(produced + more) // 10
    # the replay: one copy of each original, its items and copies in the month of its job
    assert scalar(db, "SELECT count(*) FROM event_journal WHERE replay_job_id = %s", (job,)) == \
        done["total"]
    month = scalar(db, "SELECT to_char(created_at AT TIME ZONE 'UTC', '_pYYYY_MM')"
                       " FROM replay_jobs WHERE id = %s", (job,))
    assert dict(query(db, "SELECT tableoid::regclass::text, count(*) FROM replay_job_items"
                          " WHERE job_id = %s GROUP BY 1", (job,))) == \
        {"replay_job_items" + month: done["total"]}
    assert dict(query(db, "SELECT tableoid::regclass::text, count(*) FROM journal_replay_copies"
                          " WHERE replay_job_id = %s GROUP BY 1", (job,))) == \
        {"journal_replay_copies" + month: done["total"]}
    assert s.alive()


def _apply_until(db: str, version: int) -> None:
    """The migrations up to `version` applied as eventsink applies them, and recorded."""
    query(db, "CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY,"
              " name text NOT NULL, checksum text NOT NULL,"
              " applied_at timestamptz NOT NULL DEFAULT now())")
    for f in sorted((harness.REPO / "sql").glob("*.sql")):
        v = int(f.name[:3])
        if v > version:
            break
        text = f.read_text()
        with psycopg.connect(db, autocommit=False) as c:
            c.execute(text)
            c.execute("INSERT INTO schema_migrations (version, name, checksum)"
                      " VALUES (%s, %s, %s)",
                      (v, f"sql/{f.name}", hashlib.md5(text.encode()).hexdigest()))


def test_migration_12_keeps_every_row_and_id(db, sink_factory_offline):
    _apply_until(db, 11)
    query(db, "INSERT INTO dead_letter_queue (topic, kafka_partition, kafka_offset, reason,"
              " status, created_at) SELECT 't', 0, g, 'invalid_json',"
              " CASE WHEN g % 2 = 0 THEN 'pending' ELSE 'resolved' END,"
              " now() - g * interval '1 day' FROM generate_series(1, 200) g")
    query(db, "INSERT INTO replay_jobs (kind, replay_source, status, created_at)"
              " SELECT 'range', 'operator_api', 'done', now() - g * interval '10 days'"
              " FROM generate_series(1, 12) g")
    query(db, "INSERT INTO replay_job_items (job_id, seq, event_id)"
              " SELECT j.id, g, g FROM replay_jobs j, generate_series(1, 50) g")
    query(db, "INSERT INTO journal_replay_copies (replay_job_id, replayed_from_event_id)"
              " SELECT j.id, g FROM replay_jobs j, generate_series(1, 50) g")
    before = {
        "dlq": query(db, "SELECT id, kafka_offset, status, created_at FROM dead_letter_queue"
                         " ORDER BY id"),
        "jobs": query(db, "SELECT id, created_at FROM replay_jobs ORDER BY id"),
        "items": query(db, "SELECT job_id, seq, event_id FROM replay_job_items ORDER BY 1, 2"),
        "copies": query(db, "SELECT replay_job_id, replayed_from_event_id"
                            " FROM journal_replay_copies ORDER BY 1, 2")}

    r = run_cli("migrate", "-c", str(_cli_conf(sink_factory_offline, db, name="m12")))
    assert r.returncode == 0 and "applying migration sql/012" in r.stdout + r.stderr, \
        r.stdout + r.stderr

    assert query(db, "SELECT id, kafka_offset, status, created_at FROM dead_letter_queue"
                     " ORDER BY id") == before["dlq"]
    assert query(db, "SELECT id, created_at FROM replay_jobs ORDER BY id") == before["jobs"]
    assert query(db, "SELECT job_id, seq, event_id FROM replay_job_items ORDER BY 1, 2") == \
        before["items"]
    assert query(db, "SELECT replay_job_id, replayed_from_event_id FROM journal_replay_copies"
                     " ORDER BY 1, 2") == before["copies"]
    # every row in the month of its own (or of its job), none in a default partition
    for t, col in (("dead_letter_queue", "created_at"), ("replay_jobs", "created_at"),
                   ("replay_job_items", "created_at"),
                   ("journal_replay_copies", "job_created_at")):
        assert scalar(db, f"SELECT count(*) FROM {t} WHERE tableoid::regclass::text <>"
                          f" '{t}_p' || to_char({col} AT TIME ZONE 'UTC', 'YYYY_MM')") == 0, t
    assert scalar(db, "SELECT count(*) FROM replay_job_items i JOIN replay_jobs j"
                      " ON j.id = i.job_id AND j.created_at = i.created_at") == 600
    # ids go on from where they were
    top = max(r[0] for r in before["dlq"])
    assert scalar(db, "INSERT INTO dead_letter_queue (topic, kafka_partition, kafka_offset,"
                      " reason) VALUES ('t', 0, 1000, 'x') RETURNING id") > top
    top = max(r[0] for r in before["jobs"])
    assert scalar(db, "INSERT INTO replay_jobs (kind, replay_source) VALUES ('range', 'x')"
                      " RETURNING id") > top
