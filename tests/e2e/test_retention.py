"""End-to-end tests of retention for the dead-letter queue and replay jobs (CONTRACT 9.5):
`retention.dlq` removes resolved and discarded entries older than it, `retention.jobs`
ended jobs with their items; `eventsink retention [--dry-run]` does it on demand, the
service by itself at start and hourly, one instance at a time (an advisory lock).

The journal's retention (whole month partitions dropped) is tested in
test_journal_partitions.py."""

from __future__ import annotations

import re
import subprocess

import harness
from apihelpers import metric, scrape
from harness import query, run_cli, scalar

OLD = "now() - interval '40 days'"
ANCIENT = "now() - interval '100 days'"


def _fill(db: str) -> dict:
    """DLQ entries and jobs of every kind and age; their ids by what should happen."""
    ids: dict = {"dlq_go": [], "dlq_stay": [], "job_go": [], "job_stay": []}

    def dlq(status, decided, n, partition=0, created=OLD):
        return scalar(db, "INSERT INTO dead_letter_queue (topic, kafka_partition, kafka_offset,"
                          " raw_payload, reason, error, status, created_at, last_attempt_at,"
                          f" decided_at) VALUES ('t', %s, %s, 'x', 'invalid_json', 'x', %s,"
                          f" {created}, {created}, {decided}) RETURNING id",
                      (partition, n, status))
    # the age that counts is when the entry was decided (resolved or discarded)
    for n, (status, decided, fate) in enumerate([
            ("resolved", OLD, "dlq_go"), ("discarded", OLD, "dlq_go"),
            ("pending", "NULL", "dlq_stay"), ("retrying", "NULL", "dlq_stay"),
            ("resolved", "now()", "dlq_stay"), ("discarded", "now() - interval '29 days'",
                                                "dlq_stay"),
            ("discarded", "now()", "dlq_stay")]):  # created 40 days ago, discarded just now
        ids[fate].append(dlq(status, decided, n))
    # the newest stored record of its partition goes too: the consumer's check on assignment
    # finds it in sink_offsets (test_journal_partitions.py)
    ids["dlq_go"].append(dlq("resolved", OLD, 0, partition=1))

    def job(status, finished, items):
        j = scalar(db, "INSERT INTO replay_jobs (kind, replay_source, requested_by, params,"
                       f" status, total, created_at, finished_at) VALUES ('batch', 'operator_api',"
                       f" 'ops', '{{}}', %s, %s, {ANCIENT}, {finished}) RETURNING id",
                   (status, items))
        # an item is in the month partition of its job: it carries the job's created_at
        query(db, "INSERT INTO replay_job_items (job_id, seq, status, created_at)"
                  " SELECT j.id, g, 'sent', j.created_at FROM replay_jobs j,"
                  " generate_series(1, %s) g WHERE j.id = %s", (items, j))
        return j
    ids["job_go"] += [job("done", ANCIENT, 25000), job("cancelled", ANCIENT, 3),
                      job("failed", ANCIENT, 1)]
    ids["job_stay"] += [job("running", "NULL", 2), job("done", "now()", 2),
                        job("done", OLD, 2)]  # 40 days: within 90
    return ids


def _state(db: str) -> tuple:
    return (sorted(r[0] for r in query(db, "SELECT id FROM dead_letter_queue")),
            sorted(r[0] for r in query(db, "SELECT id FROM replay_jobs")),
            scalar(db, "SELECT count(*) FROM replay_job_items"))


def test_retention_command_dry_run_and_the_lock(db, topic, sink_factory_offline):
    conf = sink_factory_offline.write_config(topics=[topic], dsn=db,
                                             overrides={"retention": {"dlq": "30d",
                                                                      "jobs": "90d"}})
    assert run_cli("migrate", "-c", str(conf)).returncode == 0
    ids = _fill(db)
    before = _state(db)

    r = run_cli("retention", "-c", str(conf), "--dry-run")
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"dlq:\s+3 resolved or discarded entries older than 30d would go", r.stdout)
    assert re.search(r"replay jobs: 3 ended longer ago than 90d, with 25004 items, would go",
                     r.stdout), r.stdout
    assert "kept forever" in r.stdout and "nothing was removed" in r.stdout
    assert _state(db) == before, "a dry run changed something"

    # another instance holds the lock: nothing is done, and it says so
    holder = subprocess.Popen(["psql", "-X", "-q", db, "-c",
                               "SELECT pg_advisory_lock(1702061571, 0), pg_sleep(30)"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        harness.wait_for(lambda: scalar(db, "SELECT count(*) FROM pg_locks WHERE locktype ="
                                            " 'advisory' AND classid = 1702061571 AND granted")
                         == 1, 30, what="the test's session to hold the retention lock")
        r = run_cli("retention", "-c", str(conf))
        assert r.returncode == 0 and "another instance is applying it" in r.stdout, r.stdout
        assert _state(db) == before
    finally:
        query(db, "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
                  " AND classid = 1702061571 AND granted")
        holder.kill()
        holder.wait()
    harness.wait_for(lambda: scalar(db, "SELECT count(*) FROM pg_locks WHERE locktype ="
                                        " 'advisory' AND classid = 1702061571") == 0, 30,
                     what="the retention lock to be free")

    r = run_cli("retention", "-c", str(conf))
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"dlq:\s+3 .* removed", r.stdout) and "25004 items, removed" in r.stdout
    dlq, jobs, items = _state(db)
    assert dlq == sorted(ids["dlq_stay"]) and jobs == sorted(ids["job_stay"]), (dlq, jobs)
    assert items == 6
    # nothing is left to remove
    r = run_cli("retention", "-c", str(conf))
    assert re.search(r"dlq:\s+0 ", r.stdout) and "0 ended" in r.stdout, r.stdout

    # "forever" keeps everything
    keep = sink_factory_offline.write_config(topics=[topic], dsn=db, name="keep",
                                             overrides={"retention": {"dlq": "forever",
                                                                      "jobs": "forever"}})
    query(db, f"UPDATE dead_letter_queue SET status = 'resolved', decided_at = {OLD}")
    r = run_cli("retention", "-c", str(keep))
    assert r.returncode == 0 and len(_state(db)[0]) == len(ids["dlq_stay"]), r.stdout


def test_the_service_applies_retention_by_itself(db, topic, sink, sink_factory_offline):
    conf = sink_factory_offline.write_config(topics=[topic], dsn=db)
    assert run_cli("migrate", "-c", str(conf)).returncode == 0
    ids = _fill(db)
    s = sink(topics=[topic], dsn=db)  # the defaults: dlq 30d, jobs 90d
    s.wait_log(r"retention: removed 3 DLQ entries resolved or discarded over 30d ago, 3 replay"
               r" jobs ended over 90d ago \(25004 items\)", timeout=60)
    dlq, jobs, _ = _state(db)
    assert dlq == sorted(ids["dlq_stay"]) and jobs == sorted(ids["job_stay"])
    samples = scrape(s)
    assert metric(samples, "eventsink_retention_removed_total", table="dead_letter_queue") == 3
    assert metric(samples, "eventsink_retention_removed_total", table="replay_job_items") == 25004


def test_check_refuses_retention_values_the_service_would_refuse(db, topic, sink_factory_offline):
    for value, words in [({"dlq": "30"}, "retention.dlq"), ({"jobs": "10m"}, "retention.jobs"),
                         ({"dlq": "soon"}, "retention.dlq"),
                         ({"journal": "30"}, "retention.journal"),
                         ({"journal": "1m"}, "retention.journal")]:
        conf = sink_factory_offline.write_config(topics=[topic], dsn=db,
                                                 overrides={"retention": value}, name="bad")
        r = run_cli("check", "-c", str(conf))
        assert r.returncode == 2 and words in r.stderr, (value, r.stderr)
    conf = sink_factory_offline.write_config(topics=[topic], dsn=db, name="good",
                                             overrides={"retention": {"journal": "365d",
                                                                      "dlq": "12h"}})
    assert run_cli("check", "-c", str(conf)).returncode == 0
