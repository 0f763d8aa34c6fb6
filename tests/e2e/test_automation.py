"""End-to-end tests of the automation driven by policies: cron schedules (replay_range and
dlq_retry actions) run once per tick across two instances, automated DLQ retries through
the dlq_retry hook, and signed replay webhooks (CONTRACT sections 3 to 6).

Real PostgreSQL, real Kafka, the real binary; assertions on HTTP answers, database rows
and log lines, never on elapsed time. The schedule test waits for real minute ticks and
takes a few minutes."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timedelta, timezone

import harness
from apihelpers import (OPS_TOKEN, TOKENS_OVERRIDE, api_for, describe, error_json, ok_json,
                        replay_rows_of_job, wait_job)
from harness import event_records, make_event, query, query_dicts, scalar, wait_at_least, wait_rows
from policyhelpers import post_webhook, route_policy, signed_request, write_policy

JOURNAL_COUNT = "SELECT count(*) FROM event_journal"
DLQ_COUNT = "SELECT count(*) FROM dead_letter_queue"


def _originals(tenant: str, n: int, start: int = 0) -> list[tuple]:
    return event_records([make_event(start + i, tenant=tenant, event_type="lead.created")
                          for i in range(n)])


# --------------------------------------------------------------------------------------
# 5. schedules: once per tick across two instances
# --------------------------------------------------------------------------------------

RUNS_AFTER_BASELINE = 3


def _schedule_policy(topic: str) -> str:
    base = route_policy().rstrip()
    assert base.endswith("}")
    return base[:-1] + f"""
  schedules = {{
    {{ name = "every-minute", cron = "* * * * *", action = "replay_range",
       params = {{ window = "10m", topic = {harness.lua_str(topic)} }} }},
    {{ name = "dlq-every-minute", cron = "* * * * *", action = "dlq_retry",
       params = {{ window = "1h", reason = "missing_tenant", topic = {harness.lua_str(topic)} }} }},
  }},
}}
"""


def _snapshot(dsn: str, name: str) -> tuple[list[dict], list[dict]]:
    """schedule_runs of a schedule and the replay jobs it requested, in one statement (one
    snapshot, so that a tick happening meanwhile cannot make them disagree)."""
    row = query(dsn, """
        SELECT (SELECT coalesce(json_agg(json_build_object(
                    'tick', extract(epoch FROM tick)::bigint, 'job_id', job_id, 'note', note)
                    ORDER BY tick), '[]') FROM schedule_runs WHERE name = %s),
               (SELECT coalesce(json_agg(json_build_object(
                    'id', id, 'kind', kind, 'replay_source', replay_source,
                    'requested_by', requested_by, 'params', params) ORDER BY id), '[]')
                  FROM replay_jobs WHERE requested_by = %s)""", (name, name))[0]
    return row[0], row[1]


def _check_runs(runs: list[dict], jobs: list[dict], name: str) -> list[dict]:
    """One row per tick, consecutive minutes, the first a baseline without a job, each
    later one with its own job; returns the runs with a job."""
    ticks = [r["tick"] for r in runs]
    assert len(set(ticks)) == len(ticks), runs
    assert all(t % 60 == 0 for t in ticks), runs
    assert [b - a for a, b in zip(ticks, ticks[1:])] == [60] * (len(ticks) - 1), \
        f"{name}: a tick was skipped or run twice: {runs}"
    assert runs[0]["job_id"] is None and runs[0]["note"], runs[0]
    later = runs[1:]
    assert all(r["job_id"] is not None for r in later), runs
    job_ids = [r["job_id"] for r in later]
    assert len(set(job_ids)) == len(job_ids), runs
    assert sorted(job_ids) == [j["id"] for j in jobs], \
        f"{name}: jobs {jobs} do not match the runs {runs}"
    for j in jobs:
        assert (j["kind"], j["replay_source"], j["requested_by"]) == \
            ("scheduled", "scheduled", name), j
    return later


def test_schedules_run_once_per_tick_across_two_instances(kafka, db, topic, sink, tmp_path):
    pfile = write_policy(tmp_path / "policies" / "schedules.lua", _schedule_policy(topic))
    s1 = sink(topics=[topic], dsn=db, policies=[str(pfile)])
    s2 = sink(topics=[topic], dsn=db, policies=[str(pfile)])  # same database and group
    sinks = [s1, s2]
    api = api_for(s1)
    n = 30
    kafka.produce(topic, _originals("acme", n))
    no_tenant = [("nt-1", json.dumps({"event_type": "lead.created", "seq": 1}).encode(), None, 0),
                 ("nt-2", json.dumps({"event_type": "lead.created", "seq": 2}).encode(), None, 1)]
    kafka.produce(topic, no_tenant)
    wait_rows(db, JOURNAL_COUNT, n, sinks=sinks)
    wait_rows(db, DLQ_COUNT, 2, sinks=sinks)

    rows = 1 + RUNS_AFTER_BASELINE
    for name in ("every-minute", "dlq-every-minute"):
        wait_at_least(db, f"SELECT count(*) FROM schedule_runs WHERE name = '{name}'", rows,
                      timeout=60 * rows + 90, sinks=sinks)

    # replay_range: each run replays the originals received in its window, once
    runs, jobs = _snapshot(db, "every-minute")
    later = _check_runs(runs, jobs, "every-minute")
    assert len(later) >= RUNS_AFTER_BASELINE
    replayed_total = 0
    for run in later:
        job = wait_job(api, run["job_id"], sinks=sinks)
        assert job["status"] == "done" and job["failed"] == 0, job
        params = next(j for j in jobs if j["id"] == run["job_id"])["params"]
        expected = scalar(db, "SELECT count(*) FROM event_journal WHERE replay_count = 0"
                              " AND topic = %s AND received_at >= %s::timestamptz"
                              " AND received_at < %s::timestamptz",
                          (topic, params["start"], params["end"]))
        assert job["total"] == expected == job["succeeded"], (job, params, expected)
        wait_rows(db, f"SELECT count(*) FROM event_journal WHERE replay_job_id = {run['job_id']}",
                  expected, sinks=sinks)
        for row in replay_rows_of_job(db, run["job_id"]):
            assert row["replay_source"] == "scheduled" and row["replay_count"] == 1, row
            assert row["replayed_from_event_id"] is not None, row
            assert row["payload"]["_replay_source"] == "scheduled", row
        replayed_total += expected
    # the window is 10 minutes: every run after the first saw all the originals
    assert job["total"] == n
    assert scalar(db, "SELECT count(*) FROM event_journal WHERE replay_count > 0"
                      " AND replay_job_id = ANY(%s)", ([r["job_id"] for r in later],)) \
        == replayed_total

    # dlq_retry: each run retries the pending missing_tenant entries; they fail again and
    # count one more attempt on the same row
    druns, djobs = _snapshot(db, "dlq-every-minute")
    dlater = _check_runs(druns, djobs, "dlq-every-minute")
    for run in dlater:
        job = wait_job(api, run["job_id"], sinks=sinks)
        # the job says what became of them: both failed again, neither succeeded
        assert (job["status"], job["total"], job["succeeded"], job["failed"]) == (
            "failed", 2, 0, 2), job
        assert job["params"]["action"] == "dlq_retry", job
    harness.wait_for(lambda: scalar(db, "SELECT min(attempts) FROM dead_letter_queue")
                     >= len(dlater), 120, what=f"both DLQ entries to count {len(dlater)} attempts")
    assert scalar(db, DLQ_COUNT) == 2  # retries that fail again add no rows
    assert scalar(db, "SELECT count(*) FROM event_journal WHERE tenant_id IS NULL") == 0
    dlq = query_dicts(db, "SELECT * FROM dead_letter_queue ORDER BY id")
    assert {(d["reason"], d["status"]) for d in dlq} <= {("missing_tenant", "pending"),
                                                        ("missing_tenant", "retrying")}, dlq

    # each run was started by one instance only: the log lines across both add up
    # (a job is logged before its transaction commits: read the rows first, then the logs)
    runs_now, _ = _snapshot(db, "every-minute")
    logs = s1.log_text() + "\n" + s2.log_text()
    logged = [int(x) for x in re.findall(r"schedule every-minute: job (\d+)", logs)]
    assert len(logged) == len(set(logged)), logged
    in_db = {r["job_id"] for r in runs_now[1:]}
    assert in_db <= set(logged), (logged, runs_now)
    assert len(set(logged) - in_db) <= 1, (logged, runs_now)  # at most a run committing now


# --------------------------------------------------------------------------------------
# 6. automated DLQ retries through the dlq_retry hook
# --------------------------------------------------------------------------------------

DLQ_RETRY_POLICY = """
return {
  dlq_retry = function(e)
    if e.attempts < 2 then
      if e.tenant_id == "reject-later" then return 20 end
      return 1
    end
  end,
}
"""

AUTOMATED_JOBS_OF = """
SELECT j.* FROM replay_jobs j JOIN replay_job_items i ON i.job_id = j.id
 WHERE i.dlq_id = %s ORDER BY j.id"""


def test_automated_dlq_retries(kafka, db, topic, sink, tmp_path):
    pfile = write_policy(tmp_path / "policies" / "retry.lua", DLQ_RETRY_POLICY)
    default = harness.REPO / "policies" / "default.lua"
    s = sink(topics=[topic], dsn=db, policies=[str(default), str(pfile)])
    query(db, "ALTER TABLE event_journal ADD CONSTRAINT no_reject"
              " CHECK (tenant_id NOT IN ('reject-me', 'reject-later'))")

    # A: rejected while the constraint stays -> two automated attempts, then it stops
    a_rec = _originals("reject-me", 1, 0) + _originals("acme", 1, 1)
    kafka.produce(topic, [(k, v, h, 0) for k, v, h, _ in a_rec])
    wait_rows(db, JOURNAL_COUNT, 1, sinks=[s])
    wait_rows(db, DLQ_COUNT, 1, sinks=[s])
    a = query_dicts(db, "SELECT * FROM dead_letter_queue")[0]
    assert a["reason"] == "db_reject" and a["tenant_id"] == "reject-me", a
    assert "no_reject" in (a["error"] or ""), a

    def stopped():
        row = query_dicts(db, "SELECT * FROM dead_letter_queue WHERE id = %s", (a["id"],))[0]
        return row if row["auto_retry_stopped"] and row["status"] == "pending" else None
    a2 = harness.wait_for(stopped, 120, what="the automated retries of entry A to stop")
    assert a2["attempts"] == 2, a2
    assert a2["next_attempt_at"] is None and a2["resolved_event_id"] is None, a2
    a_jobs = query_dicts(db, AUTOMATED_JOBS_OF, (a["id"],))
    assert len(a_jobs) == 2, a_jobs
    for j in a_jobs:
        assert (j["kind"], j["replay_source"], j["requested_by"]) == \
            ("dlq_retry", "automated", "automated"), j
    s.wait_log(rf"DLQ entry {a['id']} \(db_reject\): no more automated retries after 2")

    # B: the constraint is dropped before its retry is due -> resolved by the retry
    kafka.produce(topic, [(k, v, h, 1) for k, v, h, _ in _originals("reject-later", 1, 2)])
    wait_rows(db, DLQ_COUNT, 2, sinks=[s])
    b_id = scalar(db, "SELECT id FROM dead_letter_queue WHERE tenant_id = 'reject-later'")
    harness.wait_for(lambda: scalar(db, "SELECT retry_decided AND next_attempt_at IS NOT NULL"
                                        " FROM dead_letter_queue WHERE id = %s", (b_id,)),
                     60, what="the dlq_retry hook to decide about entry B")
    query(db, "ALTER TABLE event_journal DROP CONSTRAINT no_reject")
    b = query_dicts(db, "SELECT *, next_attempt_at > now() AS not_due FROM dead_letter_queue"
                        " WHERE id = %s", (b_id,))[0]
    assert b["not_due"] and b["attempts"] == 0, f"the retry of B was due too soon: {b}"
    assert query_dicts(db, AUTOMATED_JOBS_OF, (b_id,)) == []

    def resolved():
        row = query_dicts(db, "SELECT * FROM dead_letter_queue WHERE id = %s", (b_id,))[0]
        return row if row["status"] == "resolved" else None
    b2 = harness.wait_for(resolved, 120, what="entry B to be resolved")
    assert b2["resolved_event_id"] is not None and b2["attempts"] == 1, b2
    ev = query_dicts(db, "SELECT * FROM event_journal WHERE id = %s", (b2["resolved_event_id"],))
    assert len(ev) == 1, b2
    ev = ev[0]
    assert ev["tenant_id"] == "reject-later" and ev["replay_count"] == 1, ev
    assert ev["replayed_from_event_id"] is None and ev["replay_source"] == "automated", ev
    b_jobs = query_dicts(db, AUTOMATED_JOBS_OF, (b_id,))
    assert len(b_jobs) == 1, b_jobs
    assert (b_jobs[0]["kind"], b_jobs[0]["replay_source"], b_jobs[0]["requested_by"]) == \
        ("dlq_retry", "automated", "automated"), b_jobs
    harness.wait_for(lambda: scalar(db, "SELECT status FROM replay_jobs WHERE id = %s",
                                    (b_jobs[0]["id"],)) == "done", 60, what="B's job to be done")

    # A got no further job meanwhile, and stays where the policy left it
    assert len(query_dicts(db, AUTOMATED_JOBS_OF, (a["id"],))) == 2
    a3 = query_dicts(db, "SELECT * FROM dead_letter_queue WHERE id = %s", (a["id"],))[0]
    assert (a3["status"], a3["attempts"], a3["auto_retry_stopped"]) == ("pending", 2, True), a3
    assert scalar(db, DLQ_COUNT) == 2


# --------------------------------------------------------------------------------------
# 7. signed webhooks
# --------------------------------------------------------------------------------------

SECRET = "whsec-e2e-0123456789"


def test_signed_webhooks(kafka, db, topic, sink):
    over = dict(TOKENS_OVERRIDE)
    over["webhooks"] = {"secret": SECRET, "tolerance_s": 300}
    s = sink(topics=[topic], dsn=db, overrides=over)
    api = api_for(s)            # no token: webhooks need none
    ops = api_for(s, OPS_TOKEN)
    n = 10
    kafka.produce(topic, _originals("acme", n))
    wait_rows(db, JOURNAL_COUNT, n, sinks=[s])
    ids = [r[0] for r in query(db, "SELECT id FROM event_journal ORDER BY id")]
    # tokens are enforced elsewhere
    error_json(api.get("/replay/jobs", token=None), 401)

    # ids
    body, headers = signed_request(SECRET, {"ids": ids[:3]})
    r = post_webhook(api, body, headers)
    got = ok_json(r, 202)
    assert got["total"] == 3, got
    job = wait_job(ops, got["job_id"], sinks=[s])
    assert (job["kind"], job["replay_source"], job["requested_by"]) == \
        ("webhook", "webhook", "webhook"), job
    assert job["status"] == "done" and job["succeeded"] == 3, job
    wait_rows(db, f"SELECT count(*) FROM event_journal WHERE replay_job_id = {got['job_id']}", 3,
              sinks=[s])
    rows = replay_rows_of_job(db, got["job_id"])
    assert sorted(x["replayed_from_event_id"] for x in rows) == ids[:3]
    assert {(x["replay_source"], x["replay_count"]) for x in rows} == {("webhook", 1)}

    # a range
    now = datetime.now(timezone.utc)
    rng = {"start": (now - timedelta(hours=1)).isoformat(),
           "end": (now + timedelta(hours=1)).isoformat(), "topic": topic}
    rbody, rheaders = signed_request(SECRET, rng)
    got2 = ok_json(post_webhook(api, rbody, rheaders), 202)
    assert got2["matched"] == n, got2
    job2 = wait_job(ops, got2["job_id"], sinks=[s])
    assert (job2["kind"], job2["replay_source"], job2["requested_by"]) == \
        ("webhook", "webhook", "webhook"), job2
    assert job2["status"] == "done" and job2["succeeded"] == n, job2
    wait_rows(db, f"SELECT count(*) FROM event_journal WHERE replay_job_id = {got2['job_id']}",
              n, sinks=[s])
    assert {x["replay_source"] for x in replay_rows_of_job(db, got2["job_id"])} == {"webhook"}

    jobs_before = scalar(db, "SELECT count(*) FROM replay_jobs")
    # bad signatures
    b3, h3 = signed_request("not-the-secret", {"ids": ids[3:4]})
    error_json(post_webhook(api, b3, h3), 401)
    b4, h4 = signed_request(SECRET, {"ids": ids[3:4]})
    h4["X-Eventsink-Signature"] = "sha256=" + "0" * 64
    error_json(post_webhook(api, b4, h4), 401)
    b5, h5 = signed_request(SECRET, {"ids": ids[3:4]})
    error_json(post_webhook(api, b5 + b" ", h5), 401)          # the body was changed
    del h5["X-Eventsink-Signature"]
    error_json(post_webhook(api, b5, h5), 401)
    # a stale timestamp, correctly signed
    b6, h6 = signed_request(SECRET, {"ids": ids[3:4]}, ts=int(time.time()) - 1000)
    error_json(post_webhook(api, b6, h6), 401)
    b6, h6 = signed_request(SECRET, {"ids": ids[3:4]}, ts=int(time.time()) + 1000)
    error_json(post_webhook(api, b6, h6), 401)
    # the same signed request again
    error_json(post_webhook(api, body, headers), 409)
    error_json(post_webhook(api, rbody, rheaders), 409)
    assert scalar(db, "SELECT count(*) FROM replay_jobs") == jobs_before

    # ... also after a restart
    assert s.terminate() == 0
    s.restart()
    error_json(post_webhook(api, body, headers), 409)
    assert scalar(db, "SELECT count(*) FROM replay_jobs") == jobs_before
    # a fresh signature of the same body is a new request
    b7, h7 = signed_request(SECRET, {"ids": ids[3:4]})
    got7 = ok_json(post_webhook(api, b7, h7), 202)
    assert wait_job(ops, got7["job_id"], sinks=[s])["succeeded"] == 1

    # no secret configured: no webhooks
    other = kafka.create_topic(partitions=1)
    s2 = sink(topics=[other], dsn=db)
    b8, h8 = signed_request(SECRET, {"ids": ids[:1]})
    r = post_webhook(api_for(s2), b8, h8)
    error_json(r, 404)
    assert scalar(db, "SELECT count(*) FROM replay_jobs") == jobs_before + 1, describe(r)
