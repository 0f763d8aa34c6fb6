"""The journal's queries of the dashboard (grafana/eventsink-dashboard.json) and of
docs/GRAFANA_REPLAY_QUERIES.md run unchanged on the journal partitioned by month, and those
that bound received_at read only the partitions of their time range (partition pruning,
issue 15). PostgreSQL's own plans say so: `EXPLAIN` (which prunes at executor start too,
for `now()`) names each partition it would scan.

The plans are written to .test/artifacts/journal-plans.txt; docs/GRAFANA_REPLAY_QUERIES.md
shows them."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import harness
from dashhelpers import dashboard_targets, doc_blocks, expand_psql, expand_sql, load_dashboard
from harness import query, run_cli, scalar

PART = re.compile(r"\bevent_journal_(p\d{4}_\d{2}|default)\b")
MONTHS = 8  # of history, each with a partition


def _queries() -> list[tuple[str, str]]:
    """(where it is, its text) of every SQL query that reads the journal."""
    out = [(f"dashboard: {t.panel}", t.text) for t in dashboard_targets(load_dashboard())
           if t.kind == "sql" and "event_journal" in t.text]
    out += [(f"doc: {b.heading}", b.text) for b in doc_blocks()
            if b.lang == "sql" and "event_journal" in b.text]
    assert len(out) >= 8, "the dashboard and the document lost their journal queries"
    return out


def _window_start(text: str, start: datetime) -> datetime | None:
    """Where the query's time range on received_at begins: the dashboard's range (a
    Grafana macro, psql's :'from'), now() minus the interval it names, or None (not
    bounded: a look-up by id, the whole history)."""
    if re.search(r"\$__timeFilter\(\s*(\w+\.)?received_at\s*\)", text) or \
            re.search(r"received_at\s*>=?\s*(:'from'|\$__timeFrom)", text):
        return start
    m = re.search(r"received_at\s*>=?\s*now\(\)\s*-\s*interval\s*'(\d+) (day|hour)s?'", text)
    if m:
        n = int(m.group(1)) * (86400 if m.group(2) == "day" else 3600)
        return datetime.now(timezone.utc) - timedelta(seconds=n)
    return None


def _plan(dsn: str, sql: str) -> str:
    return "\n".join(r[0] for r in query(dsn, "EXPLAIN (COSTS OFF) " + sql))


def test_journal_queries_read_only_the_partitions_of_their_range(db, topic,
                                                                   sink_factory_offline):
    conf = sink_factory_offline.write_config(topics=[topic], dsn=db)
    assert run_cli("migrate", "-c", str(conf)).returncode == 0
    query(db, "SELECT eventsink_journal_partitions(now() - make_interval(days => %s), now())",
          (31 * MONTHS,))
    # a few rows in every month, replays among them, and statistics
    query(db, "INSERT INTO event_journal (tenant_id, event_type, topic, kafka_partition,"
              " kafka_offset, payload, received_at, replay_count, replay_source,"
              " replayed_from_event_id)"
              " SELECT 'acme', 'lead.created', %s, -1, g, '{}', now() - g * interval '1 day',"
              "  CASE WHEN g %% 7 = 0 THEN 1 ELSE 0 END,"
              "  CASE WHEN g %% 7 = 0 THEN 'operator_api' END, NULL"
              " FROM generate_series(0, %s) g", (topic, 31 * MONTHS - 1))
    query(db, "ANALYZE event_journal")
    months = scalar(db, "SELECT count(*) FROM event_journal_partitions WHERE upper IS NOT NULL")
    assert months >= MONTHS + 2  # the history, this month and the ones ahead

    now = datetime.now(timezone.utc)
    start, end = now - timedelta(days=1), now
    bounds = {r[0]: r[1] for r in query(db, "SELECT substr(name, 15), upper"
                                            " FROM event_journal_partitions")}
    report, bounded = [], 0
    for where, text in _queries():
        sql = expand_sql(text, start, end) if "$" in text else text
        sql = expand_psql(sql, {"from": start.isoformat(), "to": end.isoformat()})
        plan = _plan(db, sql)
        parts = set(PART.findall(plan))
        report.append(f"## {where}\n{plan}\n")
        since = _window_start(text, start)
        if since is None:
            continue
        bounded += 1
        # the history before the range is never read, however long it is
        old = {p for p, upper in bounds.items() if upper is not None and upper <= since}
        assert not parts & old, (
            f"{where}: reads month partitions wholly before its range: "
            f"{sorted(parts & old)}\n{plan}")
        assert len(old) >= MONTHS - 1 and parts, (where, sorted(old), plan)
    assert bounded >= 5, "fewer journal queries bound by time than the dashboard has"
    out = harness.TEST_ROOT / "artifacts" / "journal-plans.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(report))
