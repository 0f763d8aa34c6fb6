"""End-to-end tests of the journal over years (CONTRACT 9.5, sql/011): `event_journal`
partitioned by month of received_at (UTC), a default partition for months without one,
the view `event_journal_partitions` and the function `eventsink_journal_partitions`.

What they prove: a backfill of any date lands (in the default partition when its month has
none) and `eventsink retention` moves it to its month, ids and months unchanged; with
`retention.journal = "30d"` whole month partitions whose upper bound is <= now() - 30 days
are dropped (DROP TABLE, never DELETE; the partition holding the cutoff stays whole);
`--dry-run` changes nothing and says what would go; two instances drop each partition
once; ingest, a range replay and retention run side by side; a kill -9 in the middle of a
drop leaves no half-dropped partition and the next start finishes it; the lineage of an
event whose parent was dropped names it (`ancestor_gone`); and redelivery idempotency,
which no longer rests on a unique index, still journals a record read twice only once
(`sink_offsets`)."""

from __future__ import annotations

import re
import threading
from collections import Counter
from datetime import datetime, timezone

import psycopg

import harness
from apihelpers import (api_for, assert_stored_exactly_once, end_offsets, error_json, ok_json,
                        wait_caught_up, wait_job, wait_metric)
from harness import (event_records, make_event, query, run_cli, scalar, spawn_cli, wait_for,
                     wait_rows)

TOPIC = "apexflow.leads.created"  # the CLI-only tests never reach Kafka
RETAIN = {"retention": {"journal": "30d"}}
CUTOFF = "now() - interval '30 days'"
# the first instant of the month (UTC) holding the cutoff: rows from it on stay
CUTOFF_MONTH = "date_trunc('month', now() - interval '30 days', 'UTC')"
# the month partition a row belongs in
HOME = "'event_journal_p' || to_char(received_at AT TIME ZONE 'UTC', 'YYYY_MM')"
# the rows of the partitions that retention 30d drops, computed from the view
EXPIRED_ROWS = ("SELECT count(*) FROM event_journal j JOIN event_journal_partitions p"
                f" ON j.tableoid = p.name::regclass WHERE p.upper <= {CUTOFF}")
EXPIRED_PARTS = f"SELECT name FROM event_journal_partitions WHERE upper <= {CUTOFF} ORDER BY upper"
JOURNAL_LINE = re.compile(r"^journal:\s+(\d+) partitions?\b[^\n]*?\((\d+) rows[^\n]*?"
                          r"\b(removed|would go)\b", re.M)


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------

def _cli_conf(factory, db: str, journal: str | None = None, name: str = "cli"):
    """A configuration file for `eventsink migrate|retention` against db."""
    over = {"retention": {"journal": journal}} if journal else None
    return factory.write_config(topics=[TOPIC], dsn=db, overrides=over, name=name)


def _migrate(factory, db: str) -> None:
    r = run_cli("migrate", "-c", str(_cli_conf(factory, db, name="migrate")))
    assert r.returncode == 0, r.stdout + r.stderr


def _backfill(db: str, topic: str = TOPIC, days: int = 120, n: int = 480,
              partitions_first: bool = False) -> int:
    """n historical rows spread from `days` ago to a day ago, inserted directly with no Kafka
    position (partition -1, as docs/OPERATOR_QUICKREF.md's backfill), plus two rows at the
    boundary of the month holding the 30-day cutoff: its first instant (kept by retention
    30d) and the instant before (dropped). Returns the rows inserted."""
    if partitions_first:
        query(db, "SELECT eventsink_journal_partitions(now() - make_interval(days => %s),"
                  " now())", (days,))
    query(db, f"""
        INSERT INTO event_journal (tenant_id, event_type, topic, kafka_partition, kafka_offset,
                                   payload, received_at)
        SELECT 'acme', 'lead.created', %(topic)s, -1, g,
               jsonb_build_object('seq', g, 'tenant_id', 'acme', 'event_type', 'lead.created',
                                  'data', jsonb_build_object('note', repeat('x', 240))), at
          FROM (SELECT g, now() - make_interval(days => %(days)s)
                          + g * (make_interval(days => %(days)s - 1) / %(n)s) AS at
                  FROM generate_series(0, %(n)s - 1) g
                UNION ALL SELECT %(n)s, {CUTOFF_MONTH}
                UNION ALL SELECT %(n)s + 1, {CUTOFF_MONTH} - interval '1 microsecond') x""",
          {"topic": topic, "days": days, "n": n})
    return n + 2


def _partitions(db: str) -> dict[str, tuple]:
    return {name: (lo, hi) for name, lo, hi in
            query(db, "SELECT name, lower, upper FROM event_journal_partitions")}


def _rows_by_partition(db: str) -> dict[str, int]:
    return dict(query(db, "SELECT tableoid::regclass::text, count(*) FROM event_journal"
                          " GROUP BY 1"))


def _rows_by_month(db: str) -> dict[str, int]:
    return dict(query(db, "SELECT to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM'), count(*)"
                          " FROM event_journal GROUP BY 1"))


def _rows(db: str) -> list[tuple]:
    return query(db, "SELECT id, received_at, topic, kafka_partition, kafka_offset"
                     " FROM event_journal ORDER BY id")


def _expired(db: str) -> tuple[list[str], int]:
    """The partitions retention 30d drops now, and their rows."""
    return [r[0] for r in query(db, EXPIRED_PARTS)], int(scalar(db, EXPIRED_ROWS))


def _journal_tables(db: str) -> list[str]:
    """Every table named like a journal partition, attached or not."""
    return sorted(r[0] for r in query(db, "SELECT relname FROM pg_class WHERE relkind IN"
                                          " ('r', 'p') AND relname LIKE 'event_journal\\_%'"))


def _journal_line(out: str) -> tuple[int, int, str]:
    """(partitions, rows, "removed" | "would go") of the `journal:` line of retention."""
    m = JOURNAL_LINE.search(out)
    assert m, f"no journal: line with partitions and rows in:\n{out}"
    return int(m.group(1)), int(m.group(2)), m.group(3)


def _retention(conf, *extra: str) -> str:
    r = run_cli("retention", "-c", str(conf), *extra, timeout=300)
    assert r.returncode == 0, f"eventsink retention {' '.join(extra)} exited {r.returncode}:\n" \
                              f"{r.stdout}\n{r.stderr}"
    return r.stdout


def _utc_month(name: str) -> tuple[datetime, datetime]:
    """The bounds a partition event_journal_pYYYY_MM must have."""
    y, m = int(name[-7:-3]), int(name[-2:])
    lo = datetime(y, m, 1, tzinfo=timezone.utc)
    return lo, datetime(y + m // 12, m % 12 + 1, 1, tzinfo=timezone.utc)


def _dbname(dsn: str) -> str:
    return re.search(r"dbname=(\S+)", dsn).group(1)


def _other_sessions(db: str) -> set[int]:
    """The client sessions of db but the asking one."""
    return {r[0] for r in query(db, "SELECT pid FROM pg_stat_activity WHERE datname ="
                                    " current_database() AND pid <> pg_backend_pid()"
                                    " AND backend_type = 'client backend'")}


def _positions(db: str, topic: str) -> Counter:
    return Counter(query(db, "SELECT kafka_partition, kafka_offset FROM event_journal"
                             " WHERE topic = %s AND kafka_partition >= 0", (topic,)))


def _iso(dt: datetime) -> str:
    return dt.isoformat()


def _note_drops(db: str) -> None:
    """An sql_drop event trigger notes every table dropped, and by which command, in the
    table test_dropped (tag, name)."""
    query(db, """
        CREATE TABLE test_dropped (tag text, name text);
        CREATE FUNCTION test_note_drop() RETURNS event_trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO test_dropped SELECT tg_tag, object_name
              FROM pg_event_trigger_dropped_objects() WHERE object_type = 'table' AND original;
        END $$;
        CREATE EVENT TRIGGER test_note_drop ON sql_drop EXECUTE FUNCTION test_note_drop()""")


def _assert_no_stray_tables(db: str) -> None:
    """Every table named event_journal_p% is a partition of the journal."""
    attached = set(_partitions(db))
    stray = [t for t in _journal_tables(db) if t not in attached and t != "event_journal"]
    assert not stray, f"tables named like journal partitions but not attached: {stray}"


# --------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------

def test_backfill_into_default_moves_to_months(db, sink_factory_offline):
    _migrate(sink_factory_offline, db)
    n = _backfill(db)  # no eventsink_journal_partitions first
    assert scalar(db, "SELECT count(*) FROM event_journal") == n
    parts = _partitions(db)
    assert parts["event_journal_default"] == (None, None), parts
    # each row is in its month's partition when there is one, else in the default one
    for rid, where, home in query(db, f"SELECT id, tableoid::regclass::text, {HOME}"
                                      " FROM event_journal"):
        assert where == (home if home in parts else "event_journal_default"), (rid, where, home)
    assert scalar(db, "SELECT count(*) FROM event_journal_default") > 0, \
        "the backfill was meant to fill the default partition"
    months, rows = _rows_by_month(db), _rows(db)

    out = _retention(_cli_conf(sink_factory_offline, db))
    assert re.search(r"^journal:.*kept forever", out, re.M), out

    assert scalar(db, "SELECT count(*) FROM event_journal_default") == 0
    assert _rows_by_month(db) == months
    assert _rows(db) == rows  # the same ids, times and positions
    parts = _partitions(db)
    misplaced = query(db, f"SELECT id, tableoid::regclass::text, {HOME} FROM event_journal"
                          f" WHERE tableoid::regclass::text <> {HOME}")
    assert not misplaced, f"rows outside their month's partition: {misplaced[:5]}"
    # every month partition covers [first of its month, first of the next) in UTC, and
    # this month and the next two have one
    for name, bounds in parts.items():
        if name != "event_journal_default":
            assert re.fullmatch(r"event_journal_p\d{4}_\d{2}", name), name
            assert bounds == _utc_month(name), (name, bounds)
    for ahead in query(db, "SELECT 'event_journal_p' || to_char((now() + make_interval(months"
                           " => k)) AT TIME ZONE 'UTC', 'YYYY_MM') FROM generate_series(0, 2) k"):
        assert ahead[0] in parts, (ahead[0], sorted(parts))
    _assert_no_stray_tables(db)


def test_dry_run_changes_nothing(db, sink_factory_offline):
    _migrate(sink_factory_offline, db)
    _backfill(db, partitions_first=True)
    # and a row of a month with no partition yet: a real run would make it one and move it
    query(db, "INSERT INTO event_journal (tenant_id, topic, kafka_partition, kafka_offset,"
              " payload, received_at) VALUES ('acme', %s, -1, 999999, '{}',"
              " now() + interval '6 months')", (TOPIC,))
    assert scalar(db, "SELECT count(*) FROM event_journal_default") == 1

    def state():
        return (_partitions(db), _journal_tables(db), _rows_by_partition(db), _rows(db))
    before = state()
    parts, rows = _expired(db)
    assert len(parts) >= 2 and rows > 0, (parts, rows)
    conf = _cli_conf(sink_factory_offline, db, journal="30d")

    out = _retention(conf, "--dry-run")
    assert _journal_line(out) == (len(parts), rows, "would go"), out
    assert state() == before, "a dry run changed the journal"
    out = _retention(conf, "--dry-run")  # and again: still nothing changed
    assert _journal_line(out) == (len(parts), rows, "would go"), out
    assert state() == before

    # what the dry run announced is what a real run removes
    out = _retention(conf)
    assert _journal_line(out) == (len(parts), rows, "removed"), out
    assert not set(parts) & set(_partitions(db))
    assert scalar(db, "SELECT count(*) FROM event_journal_default") == 0


def test_retention_drops_whole_partitions(pg, kafka, db, topic, sink, sink_factory_offline):
    s = sink(topics=[topic], dsn=db)  # retention.journal nil: the service keeps it all
    _backfill(db, topic, days=120, n=2880, partitions_first=True)
    live = kafka.produce(topic, event_records([make_event(i, tenant="acme") for i in range(50)]))
    wait_caught_up(kafka, sink.group_id, [topic], sinks=[s])
    assert scalar(db, "SELECT count(*) FROM event_journal_default") == 0

    # what was dropped, and how: an sql_drop event trigger notes every table dropped (and by
    # which command), and the server log gets every statement of the new sessions, also
    # the ones run inside functions (auto_explain, nested statements: a DROP shows as the
    # context of the trigger's statement)
    _note_drops(db)
    name = _dbname(db)
    for setting in ("log_statement = 'all'", "session_preload_libraries = 'auto_explain'",
                    "auto_explain.log_min_duration = 0",
                    "auto_explain.log_nested_statements = on"):
        query(db, f'ALTER DATABASE "{name}" SET {setting}')
    log = pg.dir / "server.log"
    log_from = log.stat().st_size

    query(db, "VACUUM event_journal")  # sizes settled: visibility and free space maps made
    drop, drop_rows = _expired(db)
    assert len(drop) >= 2 and drop_rows > 0, (drop, drop_rows)
    ids = {r[0] for r in query(db, "SELECT id FROM event_journal")}
    dropped_ids = {r[0] for r in query(db, "SELECT j.id FROM event_journal j JOIN"
                                           " event_journal_partitions p ON j.tableoid ="
                                           f" p.name::regclass WHERE p.upper <= {CUTOFF}")}
    recent = {r[0] for r in query(db, "SELECT id FROM event_journal"
                                      f" WHERE received_at >= {CUTOFF}")}
    old_kept = {r[0] for r in query(db, f"SELECT id FROM event_journal WHERE received_at < {CUTOFF}"
                                        f" AND received_at >= {CUTOFF_MONTH}")}
    assert old_kept, "the partition holding the cutoff should hold rows older than 30 days"
    live_ids = {r[0] for r in query(db, "SELECT id FROM event_journal WHERE kafka_partition >= 0")}
    assert len(live_ids) == len(live)
    sizes = dict(query(db, "SELECT name, pg_total_relation_size(name::regclass)"
                           " FROM event_journal_partitions"))
    sessions = _other_sessions(db)

    out = _retention(_cli_conf(sink_factory_offline, db, journal="30d"))
    assert _journal_line(out) == (len(drop), drop_rows, "removed"), out

    after = {r[0] for r in query(db, "SELECT id FROM event_journal")}
    assert len(after) == len(ids) - drop_rows
    assert after == ids - dropped_ids
    assert recent <= after and old_kept <= after and live_ids <= after
    assert scalar(db, f"SELECT count(*) FROM event_journal WHERE received_at < {CUTOFF_MONTH}") == 0
    assert not set(drop) & set(_partitions(db))
    assert all(scalar(db, "SELECT to_regclass(%s)", (p,)) is None for p in drop)
    # dropped, not emptied: the space is gone with the tables
    sizes_after = dict(query(db, "SELECT name, pg_total_relation_size(name::regclass)"
                                 " FROM event_journal_partitions"))
    assert sum(sizes_after.values()) <= sum(sizes.values()) - sum(sizes[p] for p in drop), \
        (sizes, sizes_after)
    assert sorted(query(db, "SELECT tag, name FROM test_dropped")) == \
        sorted(("DROP TABLE", p) for p in drop)
    # no row was deleted: not from the partitions left, and no DELETE statement at all
    wait_for(lambda: _other_sessions(db) <= sessions, 60,
             what="the sessions of eventsink retention to end (their statistics flushed)")
    deleted = query(db, "SELECT relname, n_tup_del FROM pg_stat_user_tables WHERE relid IN"
                        " (SELECT name::regclass FROM event_journal_partitions) AND n_tup_del > 0")
    assert not deleted, deleted
    text = log.read_bytes()[log_from:].decode("utf-8", errors="replace")
    assert "event_journal" in text, \
        "the server log did not get the statements of eventsink retention"
    delete = re.compile(r"DELETE\s+FROM\s+(ONLY\s+)?\"?event_journal|Delete on \"?event_journal",
                        re.I)
    deletes = [line for line in text.splitlines() if delete.search(line)]
    assert not deletes, "\n".join(deletes[:10])
    # the drops, in the context of the event trigger's logged statement
    for p in drop:
        assert re.search(rf"DROP TABLE (IF EXISTS )?(public\.)?\"?{p}\b", text), \
            f"no DROP TABLE {p} in the server log"
    assert s.alive()


def test_ingest_and_replays_during_retention(kafka, db, topic, sink, sink_factory_offline):
    # a canary row of 100 days ago: once the service's retention at start has dropped its
    # month (the metric says so), what follows is the work of `eventsink retention` below
    _migrate(sink_factory_offline, db)
    query(db, "INSERT INTO event_journal (tenant_id, topic, kafka_partition, kafka_offset,"
              " payload, received_at) VALUES ('acme', %s, -1, 0, '{}',"
              " now() - interval '100 days')", (topic,))
    s = sink(topics=[topic], dsn=db, overrides=RETAIN)
    wait_metric(s, "eventsink_retention_removed_total", 1, timeout=120, table="event_journal")
    assert scalar(db, "SELECT count(*) FROM event_journal") == 0
    api = api_for(s)

    _backfill(db, topic)  # into the default partition: the retention moves, then drops
    gone = int(scalar(db, "SELECT count(*) FROM event_journal"
                          f" WHERE received_at < {CUTOFF_MONTH}"))
    kept = int(scalar(db, "SELECT count(*) FROM event_journal"
                          f" WHERE received_at >= {CUTOFF_MONTH}"))
    assert gone > 0 and kept > 0
    produced = kafka.produce(topic, event_records([make_event(i, tenant="acme")
                                                   for i in range(200)]))
    wait_rows(db, "SELECT count(*) FROM event_journal WHERE kafka_partition >= 0", 200, sinks=[s])

    # while more events come in: `eventsink retention` and a range replay of the last hour
    errors: list = []

    def feed():
        try:
            for k in range(10):
                produced.extend(kafka.produce(topic, event_records(
                    [make_event(1000 + 30 * k + i, tenant="acme") for i in range(30)])))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    feeder = threading.Thread(target=feed)
    feeder.start()
    retention = spawn_cli("retention", "-c", str(_cli_conf(sink_factory_offline, db, "30d")))
    lo, hi = query(db, "SELECT now() - interval '1 hour', now()")[0]
    job = ok_json(api.post("/replay/range", json={"start": _iso(lo), "end": _iso(hi),
                                                  "confirm": True, "reason": "during retention"}),
                  202)
    out, err = retention.communicate(timeout=harness.scaled(300))
    feeder.join(timeout=harness.scaled(300))
    assert not feeder.is_alive() and not errors, errors
    out, err = out.decode(errors="replace"), err.decode(errors="replace")
    assert not harness.sanitizer_lines(out + err), err
    assert retention.returncode == 0, out + err
    parts, rows, verb = _journal_line(out)
    assert (rows, verb) == (gone, "removed") and parts >= 1, out

    done = wait_job(api, job["job_id"], timeout=300, sinks=[s])
    assert (done["status"], done["failed"], done["succeeded"]) == ("done", 0, done["total"]), done
    assert done["total"] >= 200, done
    # every record now in the topic (the produced ones and the job's replays) journaled once
    records = wait_caught_up(kafka, sink.group_id, [topic], sinks=[s])
    positions = _positions(db, topic)
    dupes = [p for p, n in positions.items() if n > 1]
    assert not dupes, f"Kafka positions journaled more than once: {dupes[:5]}"
    assert set(produced) <= set(positions) and sum(positions.values()) == records
    copies = query(db, "SELECT count(*), count(DISTINCT replayed_from_event_id) FROM"
                       " event_journal WHERE replay_job_id = %s", (job["job_id"],))[0]
    assert copies == (done["total"], done["total"]), copies
    # the old partitions are gone, what is younger stays
    assert not _expired(db)[0]
    assert scalar(db, "SELECT count(*) FROM event_journal_default") == 0
    assert scalar(db, "SELECT count(*) FROM event_journal WHERE kafka_partition = -1") == kept
    _assert_no_stray_tables(db)


def test_two_instances_drop_once(db, sink_factory_offline):
    _migrate(sink_factory_offline, db)
    _backfill(db, partitions_first=True)
    drop, rows = _expired(db)
    assert drop and rows > 0
    before = set(_partitions(db))
    total = scalar(db, "SELECT count(*) FROM event_journal")
    conf = _cli_conf(sink_factory_offline, db, journal="30d")

    procs = [spawn_cli("retention", "-c", str(conf)) for _ in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=harness.scaled(300))
        out, err = out.decode(errors="replace"), err.decode(errors="replace")
        assert not harness.sanitizer_lines(out + err), err
        assert p.returncode == 0, out + err
        outs.append(out)
    got_parts = got_rows = 0
    for out in outs:
        if "another instance is applying it now" in out:
            continue
        parts, n, verb = _journal_line(out)
        assert verb == "removed", out
        got_parts, got_rows = got_parts + parts, got_rows + n
    assert (got_parts, got_rows) == (len(drop), rows), outs
    assert set(_partitions(db)) == before - set(drop)
    assert scalar(db, "SELECT count(*) FROM event_journal") == total - rows
    _assert_no_stray_tables(db)


def test_lineage_to_dropped_parent(db, topic, sink, sink_factory_offline):
    s = sink(topics=[topic], dsn=db)  # keeps the journal: the CLI below drops
    api = api_for(s)

    def insert(days_ago: int, replay_of: int | None = None, count: int = 0) -> int:
        return scalar(db, "INSERT INTO event_journal (tenant_id, event_type, topic,"
                          " kafka_partition, kafka_offset, payload, received_at, replay_count,"
                          " replay_source, replayed_from_event_id) VALUES ('acme',"
                          " 'lead.created', %s, -1, 0, '{\"event_type\": \"lead.created\"}',"
                          " now() - make_interval(days => %s), %s, %s, %s) RETURNING id",
                      (topic, days_ago, count, "operator_api" if replay_of else None, replay_of))
    parent = insert(90)
    child = insert(0, parent, 1)
    grandchild = insert(0, child, 2)
    lin = ok_json(api.get(f"/events/{child}/lineage"))
    assert [a["id"] for a in lin["ancestors"]] == [parent], lin
    assert lin.get("ancestor_gone", "missing") is None, lin

    out = _retention(_cli_conf(sink_factory_offline, db, journal="30d"))
    assert _journal_line(out)[1:] == (1, "removed"), out

    lin = ok_json(api.get(f"/events/{child}/lineage"))
    assert lin["ancestors"] == [] and lin["ancestor_gone"] == parent, lin
    assert [d["id"] for d in lin["descendants"]] == [grandchild], lin
    lin = ok_json(api.get(f"/events/{grandchild}/lineage"))
    assert [a["id"] for a in lin["ancestors"]] == [child] and lin["ancestor_gone"] == parent, lin
    error_json(api.get(f"/events/{parent}"), 404)
    error_json(api.get(f"/events/{parent}/lineage"), 404)


def test_kill_9_during_partition_drop(kafka, db, topic, sink, sink_factory_offline):
    _migrate(sink_factory_offline, db)
    _backfill(db, partitions_first=True)  # under another topic: only Kafka records below
    drop, _ = _expired(db)
    assert len(drop) >= 2, drop
    counts = _rows_by_partition(db)
    produced = kafka.produce(topic, event_records([make_event(i, tenant="acme")
                                                   for i in range(100)]))

    # an open transaction holding ACCESS SHARE on every old partition: whichever the service
    # drops first, its DROP waits (after taking the journal's own lock)
    locker = psycopg.connect(db, connect_timeout=5)
    try:
        locker.execute("LOCK TABLE " + ", ".join(f'"{p}"' for p in drop) + " IN ACCESS SHARE MODE")
        s = sink(topics=[topic], dsn=db, overrides=RETAIN, wait_started=False)

        def drop_waits():
            harness._check_alive([s])
            return scalar(db, "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a"
                              " USING (pid) WHERE l.relation::regclass::text = ANY(%s)"
                              " AND NOT l.granted AND l.mode = 'AccessExclusiveLock'"
                              " AND a.wait_event_type = 'Lock'"
                              " AND a.query ILIKE '%%drop%%'", (drop,))
        wait_for(drop_waits, 120, interval=0.02,
                 what="the service's DROP of an old partition to wait for the test's lock")
        s.kill9()
    finally:
        locker.rollback()
        locker.close()
    wait_for(lambda: not _other_sessions(db), 60, what="the killed service's sessions to end")

    # no half-dropped partition: each old one wholly there or gone, no table left detached
    _assert_no_stray_tables(db)
    now = _rows_by_partition(db)
    parts = _partitions(db)
    for p in drop:
        if p in parts:
            assert now.get(p, 0) == counts[p], (p, now.get(p), counts[p])
        else:
            assert scalar(db, "SELECT to_regclass(%s)", (p,)) is None, p
    left = sum(counts[p] for p in drop if p in parts)
    assert left > 0, "the kill left nothing for the restart to drop"

    # the next start finishes the drop by itself
    s.restart()
    wait_for(lambda: not _expired(db)[0], 120, what="the restarted service to drop the rest")
    wait_metric(s, "eventsink_retention_removed_total", left, timeout=60, table="event_journal")
    _assert_no_stray_tables(db)
    produced += kafka.produce(topic, event_records([make_event(1000 + i, tenant="acme")
                                                    for i in range(50)]))
    wait_caught_up(kafka, sink.group_id, [topic], sinks=[s])
    assert_stored_exactly_once(db, topic, produced)


def test_redelivery_not_journaled_twice(kafka, db, topic, sink):
    n = 120
    records = [(k, v, h, i % 4) for i, (k, v, h, _) in
               enumerate(event_records([make_event(i, tenant="acme") for i in range(n)]))]
    produced = kafka.produce(topic, records)
    s1 = sink(topics=[topic], dsn=db)
    wait_caught_up(kafka, sink.group_id, [topic], sinks=[s1])
    assert scalar(db, "SELECT count(*) FROM event_journal WHERE topic = %s", (topic,)) == n
    assert s1.terminate() == 0

    # another consumer group reads the whole topic again from its beginning
    again = f"{sink.group_id}-again"
    s2 = sink(topics=[topic], dsn=db, group_id=again)
    marker = kafka.produce(topic, event_records([make_event(n, tenant="acme")]))
    wait_caught_up(kafka, again, [topic], sinks=[s2])
    wait_rows(db, f"SELECT count(*) FROM event_journal WHERE topic = '{topic}'", n + 1,
              sinks=[s2])
    assert_stored_exactly_once(db, topic, produced + marker)
    assert s2.persisted_count() == 1, "the second sink journaled a redelivered record"
    # the sink's own position per partition: one past the highest offset stored
    ends = end_offsets(kafka, topic)
    stored = dict(query(db, "SELECT kafka_partition, max(kafka_offset) + 1 FROM event_journal"
                            " WHERE topic = %s GROUP BY 1", (topic,)))
    offsets = dict(query(db, "SELECT kafka_partition, next_offset FROM sink_offsets"
                             " WHERE topic = %s", (topic,)))
    assert offsets == stored == ends, (offsets, stored, ends)
