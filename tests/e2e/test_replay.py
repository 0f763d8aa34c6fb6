"""End-to-end tests of replays (CONTRACT sections 3, 4 and 5): single, batch and range
replays as audited jobs, their markers in the journal and in Kafka, the depth limit,
Idempotency-Key, cancel, resume after kill -9, DLQ retries and discards, tenant scope and
Kafka being unavailable.

Real PostgreSQL, real Kafka, the real binary. "Nothing more arrives" is shown by waiting
until the consumer group has committed every record of the topic, never by sleeping."""

from __future__ import annotations

import json
import re
import threading
from datetime import timedelta

import harness
from apihelpers import (ACME_TOKEN, ISO_WITH_ZONE, OPS_TOKEN, TOKENS_OVERRIDE, api_for, count, end_offsets,
                        error_json, header_map, job_row, kafka_record_at, metric, ok_json, scrape,
                        strip_markers, wait_caught_up, wait_job, wait_job_progress,
                        wait_journal_at, wait_metric)
from harness import (event_records, event_stream, make_event, query, query_dicts, run_cli,
                     scalar, wait_rows)

JOURNAL_COUNT = "SELECT count(*) FROM event_journal"
REPLAYED_COUNT = "SELECT count(*) FROM event_journal WHERE replay_count > 0"
DLQ_COUNT = "SELECT count(*) FROM dead_letter_queue"


def _start(sink, kafka, db, topic, events, **kw):
    """A sink on topic with events produced and journaled; (sink, api, journal rows)."""
    s = sink(topics=kw.pop("topics", [topic]), dsn=db, **kw)
    pos = kafka.produce(topic, event_records(events)) if events else []
    wait_rows(db, JOURNAL_COUNT, len(events), timeout=300, sinks=[s])
    return s, api_for(s), pos


def _landed(db, s, body):
    k = body["kafka"]
    return wait_journal_at(db, k["topic"], k["partition"], k["offset"], sinks=[s])


def _rows_of_job(db, job_id):
    return query_dicts(db, "SELECT * FROM event_journal WHERE payload->>'_replay_job_id' = %s "
                           "ORDER BY id", (str(job_id),))


def _iso(dt):
    return dt.isoformat()


# --------------------------------------------------------------------------------------
# single replays
# --------------------------------------------------------------------------------------

def test_replay_keeps_binary_repeated_and_null_headers_and_drops_old_markers(kafka, db, topic,
                                                                            sink):
    """The journal keeps headers as jsonb (bytes that are not UTF-8 as "\\x<hex>", a
    repeated name as an array); a replay produces them again byte for byte, in the
    journal's order, without the stale x-replay-* markers of an earlier replay."""
    ev = make_event(0, tenant="acme", event_type="lead.created")
    headers = [("bin", b"\xff\x00\xfe"), ("multi", b"one"), ("multi", b"two"), ("empty", None),
               ("text", "żółw".encode()), ("x-replay-source", b"stale"),
               ("looks-hex", b"\\x41")]
    s = sink(topics=[topic], dsn=db)
    api = api_for(s)
    (pos,) = kafka.produce(topic, [(ev["data"]["lead_id"], json.dumps(ev).encode(), headers)])
    a = wait_journal_at(db, topic, *pos, sinks=[s])
    body = ok_json(api.post(f"/replay/{a['id']}"), 202)
    k = body["kafka"]
    msg = kafka_record_at(kafka, topic, k["partition"], k["offset"])
    got = [(n, v) for n, v in msg.headers() if not n.startswith("x-replay")]
    want = [h for h in headers if not h[0].startswith("x-replay")]
    assert sorted(got, key=lambda h: h[0]) == sorted(want, key=lambda h: h[0]), got
    assert [v for n, v in got if n == "multi"] == [b"one", b"two"]
    h = header_map(msg)
    assert h["x-replay-source"] == b"operator_api"  # the new marker, not the stale one
    assert [n for n, _ in msg.headers()].count("x-replay-source") == 1
    r1 = _landed(db, s, body)
    sig = r1["headers"]["x-replay-signature"]  # eventsink's signature of these markers
    assert sig.startswith("v1.") and sig == h["x-replay-signature"].decode()
    assert r1["headers"] == a["headers"] | {"x-replay-source": "operator_api",
                                             "x-replayed-from-event-id": str(a["id"]),
                                             "x-replay-job-id": str(body["job_id"]),
                                             "x-replay-signature": sig}
    assert r1["replay_verified"] is True
    assert s.terminate() == 0


def test_single_replay_round_trip_depth_and_audit_queries(kafka, db, topic, sink):
    originals = [make_event(i, tenant="acme", event_type="lead.created") for i in range(3)]
    s, api, pos = _start(sink, kafka, db, topic, originals, overrides={"replay": {"max_depth": 2}})
    a = wait_journal_at(db, topic, *pos[0], sinks=[s])

    body = ok_json(api.post(f"/replay/{a['id']}", json={"reason": "customer asked"}), 202)
    assert body["event_id"] == a["id"] and body["replay_source"] == "operator_api", body
    assert isinstance(body["job_id"], int) and body["job_id"] > 0
    k = body["kafka"]
    assert k["topic"] == topic and isinstance(k["partition"], int) and isinstance(k["offset"], int)
    r1 = _landed(db, s, body)
    assert r1["replay_count"] == 1 and r1["replay_source"] == "operator_api"
    assert r1["replayed_from_event_id"] == a["id"]
    assert (r1["tenant_id"], r1["event_type"], r1["event_key"]) == ("acme", "lead.created",
                                                                   a["event_key"])
    assert r1["payload"]["_replayed_from_event_id"] == a["id"]
    assert r1["payload"]["_replay_source"] == "operator_api"
    assert r1["payload"]["_replay_job_id"] == body["job_id"]
    assert strip_markers(r1["payload"]) == a["payload"]
    s.wait_log(rf"Persisted REPLAYED lead\.created for tenant acme \(from event {a['id']}\)",
               timeout=30)

    # the Kafka record itself: markers in the headers, the original headers kept
    msg = kafka_record_at(kafka, topic, k["partition"], k["offset"])
    h = header_map(msg)
    assert h["x-replayed-from-event-id"] == str(a["id"]).encode()
    assert h["x-replay-source"] == b"operator_api"
    assert h["x-replay-job-id"] == str(body["job_id"]).encode()
    for name, value in a["headers"].items():
        assert h[name] == value.encode()
    assert msg.key() == a["event_key"].encode()
    assert json.loads(msg.value()) == r1["payload"]

    # the job: audited, done
    job = job_row(db, body["job_id"])
    assert (job["kind"], job["replay_source"], job["reason"], job["status"]) == (
        "single", "operator_api", "customer asked", "done")
    assert (job["total"], job["succeeded"], job["failed"]) == (1, 1, 0)
    assert job["requested_by"] and job["started_at"] and job["finished_at"]
    j = ok_json(api.get(f"/replay/jobs/{body['job_id']}"))
    assert (j["status"], j["succeeded"], j["kind"]) == ("done", 1, "single")
    for col in ("created_at", "started_at", "finished_at"):
        assert ISO_WITH_ZONE.match(j[col]), (col, j[col])
    assert body["job_id"] in [x["id"] for x in ok_json(api.get("/replay/jobs"))["jobs"]]

    # a replay of the replay: depth 2
    body2 = ok_json(api.post(f"/replay/{r1['id']}"), 202)
    r2 = _landed(db, s, body2)
    assert r2["replay_count"] == 2 and r2["replayed_from_event_id"] == r1["id"]
    assert r2["payload"]["_replayed_from_event_id"] == r1["id"]
    assert strip_markers(r2["payload"]) == a["payload"]
    s.wait_log(rf"Persisted REPLAYED lead\.created for tenant acme \(from event {r1['id']}\)",
               timeout=30)

    # over replay.max_depth (2): 409 with the lineage, no job, nothing produced
    jobs_before = count(db, "SELECT count(*) FROM replay_jobs")
    err = error_json(api.post(f"/replay/{r2['id']}"), 409)
    for i in (a["id"], r1["id"], r2["id"]):
        assert str(i) in err["message"], err
    assert count(db, "SELECT count(*) FROM replay_jobs") == jobs_before
    error_json(api.post("/replay/99999999"), 404, "not_found")
    wait_caught_up(kafka, sink.group_id, [topic], sinks=[s])
    assert count(db, JOURNAL_COUNT) == 5

    # the audit queries of the seed work on what was stored
    rows = query(db, "SELECT id, topic, received_at FROM event_journal "
                     "WHERE payload->>'_replayed_from_event_id' = %s", (str(a["id"]),))
    assert [(r[0], r[1]) for r in rows] == [(r1["id"], topic)]
    grouped = dict(query(db, "SELECT replay_count > 0, count(*) FROM event_journal GROUP BY 1"))
    assert grouped == {False: 3, True: 2}

    samples = scrape(s)
    assert metric(samples, "eventsink_replays_total", source="operator_api", result="ok") == 2
    wait_metric(s, "eventsink_events_persisted_total", 2, topic=topic, kind="replayed")


def test_idempotency_key_returns_the_first_answer(kafka, db, topic, sink):
    events = [make_event(i, tenant="globex") for i in range(3)]
    s, api, pos = _start(sink, kafka, db, topic, events)
    ev = wait_journal_at(db, topic, *pos[0], sinks=[s])
    path = f"/replay/{ev['id']}"

    first = api.post(path, headers={"Idempotency-Key": "req-0001"}, json={"reason": "retry me"})
    again = api.post(path, headers={"Idempotency-Key": "req-0001"}, json={"reason": "retry me"})
    b1, b2 = ok_json(first, 202), ok_json(again, 202)
    assert b1 == b2
    _landed(db, s, b1)

    # the same key from three threads at once: one job, one answer
    answers, lock = [], threading.Lock()

    def post():
        r = api.as_token(None).post(path, headers={"Idempotency-Key": "req-0002"})
        with lock:
            answers.append((r.status_code, r.text))
    threads = [threading.Thread(target=post) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(harness.scaled(120))
    assert len(answers) == 3 and {a[0] for a in answers} == {202}, answers
    assert len({json.loads(a[1])["job_id"] for a in answers}) == 1, answers
    b3 = json.loads(answers[0][1])
    assert b3["job_id"] != b1["job_id"]

    # no key: every request replays
    b4 = ok_json(api.post(path), 202)
    b5 = ok_json(api.post(path), 202)
    assert len({b["job_id"] for b in (b1, b3, b4, b5)}) == 4
    error_json(api.post(path, headers={"Idempotency-Key": "k" * 500}), 400)

    assert count(db, "SELECT count(*) FROM replay_jobs WHERE kind = 'single'") == 4
    wait_caught_up(kafka, sink.group_id, [topic], sinks=[s])
    assert count(db, REPLAYED_COUNT) == 4
    assert sorted(r["payload"]["_replay_job_id"] for r in query_dicts(
        db, "SELECT payload FROM event_journal WHERE replay_count > 0")) == sorted(
        b["job_id"] for b in (b1, b3, b4, b5))


def test_idempotency_key_reused_for_another_event_is_not_a_retry(kafka, db, topic, sink):
    s, api, pos = _start(sink, kafka, db, topic, [make_event(i, tenant="acme") for i in range(2)])
    e1, e2 = (wait_journal_at(db, topic, *p, sinks=[s])["id"] for p in pos)
    b1 = ok_json(api.post(f"/replay/{e1}", headers={"Idempotency-Key": "shared-key"}), 202)
    assert b1["event_id"] == e1
    r = api.post(f"/replay/{e2}", headers={"Idempotency-Key": "shared-key"})
    # either it replays e2, or it refuses the reuse of the key; it must not answer 202 with
    # the job and Kafka position of e1 as if e2 had been replayed
    if r.status_code == 202:
        assert r.json()["event_id"] == e2, (
            f"POST /replay/{e2} with the Idempotency-Key of POST /replay/{e1} answered "
            f"{r.text} (the answer for event {e1}); event {e2} was not replayed")
    else:
        assert r.status_code in (409, 422), r.text
        error_json(r, r.status_code)


# --------------------------------------------------------------------------------------
# batch and range replays
# --------------------------------------------------------------------------------------

def test_batch_with_unknown_ids_counts_them_as_failed(kafka, db, topic, sink):
    s, api, _ = _start(sink, kafka, db, topic, list(event_stream(990, seed=71)))
    ids = [r[0] for r in query(db, "SELECT id FROM event_journal ORDER BY id")]
    top = max(ids)
    unknown = [top + 1000 + i for i in range(10)]
    mixed = list(ids)
    for i, u in enumerate(unknown):
        mixed.insert(i * 97, u)
    assert len(mixed) == 1000

    error_json(api.post("/replay/batch", json={"ids": list(range(1, 10_002))}), 400)
    body = ok_json(api.post("/replay/batch", json={"ids": mixed, "reason": "backfill"}), 202)
    assert body["total"] == 1000
    job = wait_job(api, body["job_id"], sinks=[s])
    assert (job["status"], job["total"], job["succeeded"], job["failed"]) == ("done", 1000, 990, 10)
    assert job["kind"] == "batch" and job["replay_source"] == "operator_api"
    assert job["reason"] == "backfill"

    wait_rows(db, REPLAYED_COUNT, 990, timeout=300, sinks=[s])
    wait_caught_up(kafka, sink.group_id, [topic], sinks=[s])
    rows = _rows_of_job(db, body["job_id"])
    assert len(rows) == 990 == count(db, REPLAYED_COUNT)
    assert sorted(r["replayed_from_event_id"] for r in rows) == ids
    assert all(r["replay_count"] == 1 and r["replay_source"] == "operator_api" for r in rows)
    assert count(db, DLQ_COUNT) == 0
    wait_metric(s, "eventsink_replays_total", 990, source="operator_api", result="ok")


def test_range_replay_filters_dry_run_and_confirmation(kafka, db, topic, sink):
    t2 = kafka.create_topic(partitions=4)
    ev1 = [make_event(i, tenant=("acme", "globex")[i % 2]) for i in range(60)]
    ev2 = [make_event(100 + i, tenant=("acme", "globex")[i % 2]) for i in range(40)]
    s = sink(topics=[topic, t2], dsn=db, overrides={"replay": {"confirm_above": 25}})
    api = api_for(s)
    kafka.produce(topic, event_records(ev1))
    kafka.produce(t2, event_records(ev2))
    wait_rows(db, JOURNAL_COUNT, 100, sinks=[s])

    # a few replays first, so that only_original has something to leave out
    five = [r[0] for r in query(db, "SELECT id FROM event_journal WHERE topic = %s AND "
                                    "tenant_id = 'acme' ORDER BY id LIMIT 5", (topic,))]
    pre = ok_json(api.post("/replay/batch", json={"ids": five}), 202)
    assert wait_job(api, pre["job_id"], sinks=[s])["succeeded"] == 5
    wait_rows(db, JOURNAL_COUNT, 105, sinks=[s])
    lo, hi = query(db, "SELECT min(received_at), max(received_at) FROM event_journal")[0]
    window = {"start": _iso(lo - timedelta(seconds=1)), "end": _iso(hi + timedelta(seconds=1))}
    want = [r[0] for r in query(db, "SELECT id FROM event_journal WHERE topic = %s AND "
                                    "tenant_id = 'acme' AND replay_count = 0 ORDER BY id",
                                (topic,))]
    assert len(want) == 30

    flt = dict(window, topic=topic, tenant="acme")
    dry = ok_json(api.post("/replay/range", json=dict(flt, dry_run=True)))
    assert dry["matched"] == 30
    q = dict(flt, dry_run="true")
    assert ok_json(api.post("/replay/range", params=q))["matched"] == 30
    assert ok_json(api.post("/replay/range", json=dict(flt, dry_run=True, only_original=False))
                   )["matched"] == 35
    assert ok_json(api.post("/replay/range", json=dict(window, dry_run=True)))["matched"] == 100
    # an empty filter is no filter, in the body as in the query string
    assert ok_json(api.post("/replay/range", json=dict(window, topic="", tenant="",
                                                       dry_run=True)))["matched"] == 100
    assert ok_json(api.post("/replay/range", params=dict(window, topic="", tenant="",
                                                         dry_run="true")))["matched"] == 100
    assert ok_json(api.post("/replay/range", json=dict(window, topic=t2, tenant="globex",
                                                       dry_run=True)))["matched"] == 20
    empty = {"start": "2001-01-01T00:00:00Z", "end": "2001-01-02T00:00:00Z", "dry_run": True}
    assert ok_json(api.post("/replay/range", json=empty))["matched"] == 0
    error_json(api.post("/replay/range", json={"start": window["end"], "end": window["start"]}),
               400)

    # 30 > replay.confirm_above (25): refused without "confirm": true, and no job is made
    jobs = count(db, "SELECT count(*) FROM replay_jobs")
    error_json(api.post("/replay/range", json=flt), 422)
    assert count(db, "SELECT count(*) FROM replay_jobs") == jobs
    body = ok_json(api.post("/replay/range", json=dict(flt, confirm=True, reason="range")), 202)
    assert body["matched"] == dry["matched"]
    job = wait_job(api, body["job_id"], sinks=[s])
    assert (job["status"], job["kind"], job["total"], job["succeeded"], job["failed"]) == (
        "done", "range", 30, 30, 0)
    wait_rows(db, REPLAYED_COUNT, 35, sinks=[s])
    wait_caught_up(kafka, sink.group_id, [topic, t2], sinks=[s])
    rows = _rows_of_job(db, body["job_id"])
    assert len(rows) == dry["matched"]
    assert sorted(r["replayed_from_event_id"] for r in rows) == want
    assert {(r["topic"], r["tenant_id"], r["replay_count"]) for r in rows} == {(topic, "acme", 1)}
    assert count(db, REPLAYED_COUNT) == 35


# --------------------------------------------------------------------------------------
# cancel and resume
# --------------------------------------------------------------------------------------

def test_cancel_stops_a_slow_job_for_good(kafka, db, topic, sink):
    s, api, _ = _start(sink, kafka, db, topic, list(event_stream(300, seed=73)))
    ids = [r[0] for r in query(db, "SELECT id FROM event_journal ORDER BY id")]
    body = ok_json(api.post("/replay/batch", json={"ids": ids, "rate_per_s": 20}), 202)
    job_id = body["job_id"]
    wait_job_progress(api, job_id, 20, sinks=[s])
    c = ok_json(api.post(f"/replay/jobs/{job_id}/cancel"))
    assert c["id"] == job_id and c["status"] == "cancelled", c
    s.wait_log(rf"replay job {job_id} stopped", timeout=60)
    after_stop = job_row(db, job_id)
    assert after_stop["status"] == "cancelled"
    assert after_stop["succeeded"] < 300, "the job finished before it could be cancelled"
    error_json(api.post(f"/replay/jobs/{job_id}/cancel"), 409)

    # the worker goes on with other jobs, and the cancelled one stays where it stopped
    other = ok_json(api.post("/replay/batch", json={"ids": ids[:1]}), 202)
    assert wait_job(api, other["job_id"], sinks=[s])["status"] == "done"
    wait_caught_up(kafka, sink.group_id, [topic], sinks=[s])
    final = job_row(db, job_id)
    assert (final["status"], final["succeeded"], final["failed"]) == (
        "cancelled", after_stop["succeeded"], 0)
    assert len(_rows_of_job(db, job_id)) == final["succeeded"]
    assert count(db, REPLAYED_COUNT) == final["succeeded"] + 1
    j = ok_json(api.get(f"/replay/jobs/{job_id}"))
    assert j["status"] == "cancelled" and j["succeeded"] == final["succeeded"]


def test_migrate_and_a_second_start_while_job_2_runs(kafka, db, topic, sink):
    """A running job's claim lock and the migration lock are different locks whatever the
    job id (job 2's claim once equalled the migration lock)."""
    s, api, _ = _start(sink, kafka, db, topic, list(event_stream(50, seed=77)))
    ids = [r[0] for r in query(db, "SELECT id FROM event_journal ORDER BY id")]
    first = ok_json(api.post("/replay/batch", json={"ids": ids[:1]}), 202)
    wait_job(api, first["job_id"], sinks=[s])
    body = ok_json(api.post("/replay/batch", json={"ids": ids, "rate_per_s": 1}), 202)
    assert body["job_id"] == 2, body
    wait_job_progress(api, 2, 1, sinks=[s])
    r = run_cli("migrate", "-c", str(s.config_path), timeout=30)
    assert r.returncode == 0, r.stderr
    s2 = sink(topics=[topic], dsn=db)  # its start-up migrates too: it starts
    assert job_row(db, 2)["status"] == "running"
    ok_json(api.post("/replay/jobs/2/cancel"))
    assert s2.terminate() == 0
    assert s.terminate() == 0


def test_range_job_resumes_after_kill_9_without_duplicates(kafka, db, topic, sink):
    total = 20_000
    s, api, _ = _start(sink, kafka, db, topic, list(event_stream(total, seed=75)),
                       overrides={"replay": {"rate_per_s": 2000}},
                       batch={"max_events": 1000, "max_wait_ms": 50})
    rng = {"start": "2000-01-01T00:00:00Z", "end": "2100-01-01T00:00:00Z"}
    error_json(api.post("/replay/range", json=rng), 422)  # over the default confirm_above
    body = ok_json(api.post("/replay/range", json=dict(rng, confirm=True)), 202)
    assert body["matched"] == total
    job_id = body["job_id"]
    wait_job_progress(api, job_id, 3000, timeout=300, sinks=[s])
    assert s.kill9() < 0
    at_kill = job_row(db, job_id)
    assert at_kill["status"] == "running" and at_kill["succeeded"] < total, at_kill

    s.restart()
    s.wait_log(rf"replay job {job_id} \(range, source operator_api\) running", timeout=60)
    job = wait_job(api_for(s), job_id, timeout=600, sinks=[s])
    assert (job["status"], job["total"], job["succeeded"], job["failed"]) == (
        "done", total, total, 0)
    wait_rows(db, REPLAYED_COUNT, total, timeout=600, sinks=[s])
    wait_caught_up(kafka, sink.group_id, [topic], timeout=600, sinks=[s])
    assert count(db, REPLAYED_COUNT) == total
    dupes = query(db, "SELECT replayed_from_event_id, count(*) FROM event_journal "
                      "WHERE replay_count > 0 GROUP BY 1 HAVING count(*) > 1 LIMIT 5")
    assert not dupes, f"events replayed more than once: {dupes}"
    assert count(db, "SELECT count(*) FROM event_journal o WHERE replay_count = 0 AND NOT "
                     "EXISTS (SELECT 1 FROM event_journal r WHERE "
                     "r.replayed_from_event_id = o.id)") == 0
    assert len(_rows_of_job(db, job_id)) == total
    assert count(db, DLQ_COUNT) == 0
    assert s.terminate() == 0


def test_replay_counts_equal_the_journal_when_kafka_answers_late(kafka, db, topic, sink):
    """Produce requests that get their answer after message.timeout.ms (the broker frozen
    with SIGSTOP while they are on the wire): librdkafka reports them as timed out, yet the
    broker writes them once it runs again. An item counted succeeded has exactly one
    journal row, one counted failed has none."""
    total = 400
    s, api, _ = _start(sink, kafka, db, topic, list(event_stream(total, seed=91)),
                       overrides={"kafka": {"properties": {"message.timeout.ms": "3000"}}})
    ids = [r[0] for r in query(db, "SELECT id FROM event_journal ORDER BY id")]
    # the producer knows the topic's leader already: its requests go out at once
    ok_json(api.post(f"/replay/{ids[0]}"), 202)
    ids = ids[1:]
    total -= 1
    kafka.freeze()
    try:
        body = ok_json(api.post("/replay/batch", json={"ids": ids}), 202)
        job_id = body["job_id"]
        # the service has seen the timeouts of produces that were on the wire
        harness.wait_for(lambda: (metric(scrape(s), "eventsink_replays_total",
                                         source="operator_api", result="unknown") or 0) > 0,
                         harness.scaled(60), what="replays without a definite answer")
    finally:
        kafka.thaw()
    job = wait_job(api, job_id, timeout=300, sinks=[s])
    assert job["succeeded"] + job["failed"] == total, job
    wait_caught_up(kafka, sink.group_id, [topic], timeout=300, sinks=[s])
    items = query_dicts(db, "SELECT i.seq, i.status, i.event_id, count(j.id) AS rows "
                            "FROM replay_job_items i LEFT JOIN event_journal j "
                            "ON j.replay_job_id = i.job_id AND j.replayed_from_event_id = i.event_id "
                            "WHERE i.job_id = %s GROUP BY 1, 2, 3", (job_id,))
    wrong = [i for i in items if (i["status"], i["rows"]) not in (("sent", 1), ("failed", 0))]
    assert not wrong, f"{len(wrong)} items disagree with the journal, e.g. {wrong[:3]}"
    assert sum(i["status"] == "sent" for i in items) == job["succeeded"]
    assert count(db, f"SELECT count(*) FROM event_journal WHERE replay_job_id = {job_id}") == \
        job["succeeded"]

    # a synchronous replay without Kafka's answer: 503, and its job settles it by itself
    kafka.freeze()
    try:
        r = api.post(f"/replay/{ids[0]}")
    finally:
        kafka.thaw()
    err = error_json(r, 503)
    assert err["error"] == "kafka_unavailable" and "settles it by itself" in err["message"], err
    single = int(re.search(r"job (\d+)", err["message"]).group(1))
    job = wait_job(api, single, timeout=300, sinks=[s])
    wait_caught_up(kafka, sink.group_id, [topic], timeout=300, sinks=[s])
    rows = count(db, f"SELECT count(*) FROM event_journal WHERE replay_job_id = {single}")
    assert (job["status"], job["succeeded"], job["failed"], rows) == ("done", 1, 0, 1), (job, rows)
    assert s.terminate() == 0


# --------------------------------------------------------------------------------------
# the dead-letter queue
# --------------------------------------------------------------------------------------

def test_dlq_retry_resolve_fail_again_discard_and_filter(kafka, db, topic, sink,
                                                         sink_factory_offline):
    conf = sink_factory_offline.write_config(topics=[topic], dsn=db)
    r = run_cli("migrate", "-c", str(conf))
    assert r.returncode == 0, r.stdout + r.stderr
    query(db, "ALTER TABLE event_journal ADD CONSTRAINT no_reject CHECK (tenant_id <> 'reject-me')")
    s = sink(topics=[topic], dsn=db)
    api = api_for(s)
    rejects = [make_event(1000 + i, tenant="reject-me", event_type="lead.created")
               for i in range(3)]
    records = (event_records(list(event_stream(20, seed=77))) + event_records(rejects)
               + [("bad-1", b'{"tenant_id": "acme", ', None, None),
                  ("bad-2", b"<xml/>", [("h", b"v")], None)])
    kafka.produce(topic, records)
    wait_rows(db, JOURNAL_COUNT, 20, sinks=[s])
    wait_rows(db, DLQ_COUNT, 5, sinks=[s])
    rej = query_dicts(db, "SELECT * FROM dead_letter_queue WHERE reason = 'db_reject' ORDER BY id")
    assert len(rej) == 3 and all(d["status"] == "pending" and d["attempts"] == 0 for d in rej)
    a, b, c = (d["id"] for d in rej)

    # a retry while the cause is still there fails again: one more attempt, no new row
    body = ok_json(api.post(f"/dlq/{a}/retry", json={"reason": "try again"}), 202)
    assert body["dlq_id"] == a and body["replay_source"] == "operator_api", body
    msg = kafka_record_at(kafka, topic, body["kafka"]["partition"], body["kafka"]["offset"])
    assert header_map(msg)["x-replayed-from-dlq-id"] == str(a).encode()
    assert json.loads(msg.value())["_replayed_from_dlq_id"] == a

    def failed_again():
        d = query_dicts(db, "SELECT * FROM dead_letter_queue WHERE id = %s", (a,))[0]
        return d if d["attempts"] == 1 and d["status"] == "pending" else None
    harness.wait_for(failed_again, 60, what=f"DLQ entry {a} to count a failed attempt")
    s.wait_log(rf"DLQ entry {a} was retried and failed again", timeout=30)
    # the job says what became of the entry: it failed again, it did not succeed
    job = wait_job(api, body["job_id"], sinks=[s])
    assert (job["status"], job["succeeded"], job["failed"]) == ("failed", 0, 1), job
    wait_caught_up(kafka, sink.group_id, [topic], sinks=[s])
    assert count(db, DLQ_COUNT) == 5
    assert count(db, "SELECT count(*) FROM event_journal WHERE tenant_id = 'reject-me'") == 0

    # fix the cause, retry: resolved, pointing to a journal row of replay_count 1
    query(db, "ALTER TABLE event_journal DROP CONSTRAINT no_reject")
    body = ok_json(api.post(f"/dlq/{a}/retry"), 202)
    row = _landed(db, s, body)
    job = wait_job(api, body["job_id"], sinks=[s])
    assert (job["status"], job["succeeded"], job["failed"]) == ("done", 1, 0), job
    d = query_dicts(db, "SELECT * FROM dead_letter_queue WHERE id = %s", (a,))[0]
    assert d["status"] == "resolved" and d["resolved_event_id"] == row["id"], d
    assert d["attempts"] >= 1
    assert row["replay_count"] == 1 and row["replayed_from_event_id"] is None
    assert row["replay_source"] == "operator_api" and row["tenant_id"] == "reject-me"
    assert row["payload"]["_replayed_from_dlq_id"] == a
    assert row["payload"]["_replay_job_id"] == body["job_id"]
    assert {k: v for k, v in row["payload"].items() if not k.startswith("_replay")} in rejects
    s.wait_log(rf"Persisted REPLAYED lead\.created for tenant reject-me \(from DLQ entry {a}\)",
               timeout=30)
    got = ok_json(api.get(f"/dlq/{a}"))
    assert got["status"] == "resolved" and got["resolved_event_id"] == row["id"]
    assert [e["id"] for e in ok_json(api.get("/dlq", params={"status": "resolved"}))["entries"]
            ] == [a]
    error_json(api.post(f"/dlq/{a}/retry"), 409)

    # discard keeps the entry
    assert ok_json(api.post(f"/dlq/{b}/discard")) == {"id": b, "status": "discarded"}
    assert ok_json(api.get(f"/dlq/{b}"))["status"] == "discarded"
    error_json(api.post(f"/dlq/{b}/retry"), 409)
    error_json(api.post(f"/dlq/{b}/discard"), 409)

    # retry by filter: only the pending db_reject entry (c)
    f = ok_json(api.post("/dlq/retry", json={"reason": "db_reject"}), 202)
    assert f["total"] == 1
    job = wait_job(api, f["job_id"], sinks=[s])
    assert (job["status"], job["succeeded"], job["failed"]) == ("done", 1, 0), job
    harness.wait_for(lambda: scalar(db, "SELECT status FROM dead_letter_queue WHERE id = %s",
                                    (c,)) == "resolved", 60, what=f"DLQ entry {c} resolved")
    # invalid JSON retried: the markers travel in the headers; they fail again in place
    f2 = ok_json(api.post("/dlq/retry", json={"reason": "invalid_json"}), 202)
    assert f2["total"] == 2
    job = wait_job(api, f2["job_id"], sinks=[s])
    assert (job["status"], job["succeeded"], job["failed"], job["pending"]) == (
        "failed", 0, 2, 0), job
    harness.wait_for(lambda: count(db, "SELECT count(*) FROM dead_letter_queue WHERE reason = "
                                       "'invalid_json' AND attempts = 1 AND status = 'pending'")
                     == 2, 60, what="the invalid_json entries to count one failed attempt")
    wait_caught_up(kafka, sink.group_id, [topic], sinks=[s])
    assert count(db, DLQ_COUNT) == 5
    st = dict(query(db, "SELECT id, status FROM dead_letter_queue WHERE reason = 'db_reject'"))
    assert st == {a: "resolved", b: "discarded", c: "resolved"}
    assert count(db, "SELECT count(*) FROM event_journal WHERE tenant_id = 'reject-me'") == 2
    assert count(db, "SELECT count(*) FROM event_journal WHERE replayed_from_event_id IS NOT "
                     "NULL") == 0


def test_dlq_retry_never_read_back_counts_as_failed_not_succeeded(kafka, db, topic, sink):
    """A retry Kafka took but that no consumer reads back (its topic is not one this
    service consumes) has no outcome: the job waits for one, then counts it failed with
    why, instead of calling it a success."""
    s, api, _ = _start(sink, kafka, db, topic, [make_event(1, tenant="acme")])
    elsewhere = kafka.create_topic()
    dlq_id = scalar(db, "INSERT INTO dead_letter_queue (topic, kafka_partition, kafka_offset,"
                        " raw_payload, reason, error) VALUES (%s, 0, 0, %s, 'missing_tenant',"
                        " 'no tenant') RETURNING id",
                    (elsewhere, json.dumps(make_event(2, tenant="acme")).encode()))
    body = ok_json(api.post("/dlq/retry", json={"reason": "missing_tenant"}), 202)
    assert body["total"] == 1

    def awaiting():
        j = ok_json(api.get(f"/replay/jobs/{body['job_id']}"))
        sent = scalar(db, "SELECT status FROM replay_job_items WHERE job_id = %s",
                      (body["job_id"],))
        return j if sent == "sent" else None
    job = harness.wait_for(awaiting, 60, what="the retry to be sent")
    # Kafka took it; nothing is known yet of the entry, so nothing counts as done
    assert (job["status"], job["succeeded"], job["failed"], job["pending"]) == (
        "running", 0, 0, 1), job
    # the wait for an outcome (two minutes) has passed
    query(db, "UPDATE replay_job_items SET sent_at = now() - interval '1 hour' WHERE job_id = %s",
          (body["job_id"],))
    job = wait_job(api, body["job_id"], sinks=[s])
    assert (job["status"], job["succeeded"], job["failed"]) == ("failed", 0, 1), job
    item = query_dicts(db, "SELECT outcome, error FROM replay_job_items WHERE job_id = %s",
                       (body["job_id"],))[0]
    assert item["outcome"] == "no_outcome" and "did not read it back" in item["error"], item
    assert scalar(db, "SELECT status FROM dead_letter_queue WHERE id = %s", (dlq_id,)) != "resolved"


def test_dlq_retry_with_slow_bookkeeping_is_produced_once_and_back_to_pending(
        kafka, db, topic, sink, sink_factory_offline):
    """PostgreSQL slowed down on purpose (a trigger that sleeps when a job item is updated):
    the retry of POST /dlq/{id}/retry must still be produced once, and when it fails again
    the entry must be pending again with one more attempt."""
    conf = sink_factory_offline.write_config(topics=[topic], dsn=db)
    assert run_cli("migrate", "-c", str(conf)).returncode == 0
    query(db, "ALTER TABLE event_journal ADD CONSTRAINT no_reject CHECK (tenant_id <> 'reject-me')")
    s, api, _ = _start(sink, kafka, db, topic, [make_event(i, tenant="acme") for i in range(3)])
    kafka.produce(topic, event_records([make_event(9, tenant="reject-me")]))
    wait_rows(db, DLQ_COUNT, 1, sinks=[s])
    wait_caught_up(kafka, sink.group_id, [topic], sinks=[s])
    dlq_id = scalar(db, "SELECT id FROM dead_letter_queue")
    before = sum(end_offsets(kafka, topic).values())
    query(db, "CREATE FUNCTION slow_item() RETURNS trigger LANGUAGE plpgsql AS "
              "$$ BEGIN PERFORM pg_sleep(3); RETURN NEW; END $$")
    query(db, "CREATE TRIGGER slow_item BEFORE UPDATE ON replay_job_items "
              "FOR EACH ROW EXECUTE FUNCTION slow_item()")
    body = ok_json(api.post(f"/dlq/{dlq_id}/retry"), 202)
    wait_job(api, body["job_id"], sinks=[s])
    wait_caught_up(kafka, sink.group_id, [topic], sinks=[s])
    produced = sum(end_offsets(kafka, topic).values()) - before
    d = query_dicts(db, "SELECT * FROM dead_letter_queue WHERE id = %s", (dlq_id,))[0]
    problems = []
    if produced != 1:
        problems.append(f"one POST /dlq/{dlq_id}/retry put {produced} records into Kafka; log: "
                        + " | ".join(l for l in s.log_text().splitlines() if "replay job" in l))
    if (d["status"], d["attempts"]) != ("pending", 1):
        problems.append(f"after the retry failed again the entry is {d['status']!r} with "
                        f"{d['attempts']} attempt(s), expected 'pending' with 1")
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------------------
# tenant scope and Kafka unavailable
# --------------------------------------------------------------------------------------

def test_tenant_scope_on_replay_endpoints(kafka, db, topic, sink, sink_factory_offline):
    conf = sink_factory_offline.write_config(topics=[topic], dsn=db)
    assert run_cli("migrate", "-c", str(conf)).returncode == 0
    query(db, "ALTER TABLE event_journal ADD CONSTRAINT no_reject "
              "CHECK (event_type <> 'reject.me')")
    events = ([make_event(i, tenant="acme") for i in range(6)]
              + [make_event(50 + i, tenant="globex") for i in range(6)]
              + [make_event(90, tenant="acme", event_type="reject.me"),
                 make_event(91, tenant="globex", event_type="reject.me")])
    s, ops, _ = _start(sink, kafka, db, topic, events[:12], overrides=TOKENS_OVERRIDE)
    kafka.produce(topic, event_records(events[12:]))
    wait_rows(db, DLQ_COUNT, 2, sinks=[s])
    ops, acme = ops.as_token(OPS_TOKEN), ops.as_token(ACME_TOKEN)
    ids = {t: [r[0] for r in query(db, "SELECT id FROM event_journal WHERE tenant_id = %s "
                                       "ORDER BY id", (t,))] for t in ("acme", "globex")}
    dlq = dict(query(db, "SELECT tenant_id, id FROM dead_letter_queue"))

    error_json(acme.post(f"/replay/{ids['globex'][0]}"), 404)
    b = ok_json(acme.post("/replay/batch", json={"ids": ids["globex"] + ids["acme"][:1]}), 202)
    assert b["total"] == 7
    job = wait_job(acme, b["job_id"], sinks=[s])
    assert (job["succeeded"], job["failed"]) == (1, 6)
    rng = {"start": "2000-01-01T00:00:00Z", "end": "2100-01-01T00:00:00Z"}
    g = ok_json(acme.post("/replay/range", json=dict(rng, tenant="globex")), 202)
    assert g["matched"] == 0
    assert wait_job(acme, g["job_id"], sinks=[s])["succeeded"] == 0
    mine = ok_json(acme.post("/replay/range", json=rng), 202)
    assert mine["matched"] == 6
    assert wait_job(acme, mine["job_id"], sinks=[s])["succeeded"] == 6

    ops_job = ok_json(ops.post("/replay/batch", json={"ids": ids["globex"][:2]}), 202)
    wait_job(ops, ops_job["job_id"], sinks=[s])
    error_json(acme.get(f"/replay/jobs/{ops_job['job_id']}"), 404)
    error_json(acme.post(f"/replay/jobs/{ops_job['job_id']}/cancel"), 404)
    seen = {j["id"] for j in ok_json(acme.get("/replay/jobs"))["jobs"]}
    assert seen == {b["job_id"], g["job_id"], mine["job_id"]}
    assert {b["job_id"], ops_job["job_id"]} <= {j["id"] for j in ok_json(
        ops.get("/replay/jobs"))["jobs"]}

    # DLQ retries by filter stay within the token's tenants
    error_json(acme.post(f"/dlq/{dlq['globex']}/retry"), 404)
    f = ok_json(acme.post("/dlq/retry", json={}), 202)
    assert f["total"] == 1
    wait_job(acme, f["job_id"], sinks=[s])
    harness.wait_for(lambda: scalar(db, "SELECT attempts FROM dead_letter_queue WHERE id = %s",
                                    (dlq["acme"],)) == 1, 60, what="the acme DLQ entry retried")
    wait_caught_up(kafka, sink.group_id, [topic], sinks=[s])
    assert scalar(db, "SELECT attempts FROM dead_letter_queue WHERE id = %s", (dlq["globex"],)) == 0
    assert count(db, DLQ_COUNT) == 2
    replayed = dict(query(db, "SELECT tenant_id, count(*) FROM event_journal WHERE "
                              "replay_count > 0 GROUP BY 1"))
    assert replayed == {"acme": 7, "globex": 2}


def test_kafka_unavailable_answers_503_and_counts_nothing_as_sent(db, topic, sink):
    dead = harness.free_port()  # nothing listens there
    s = sink(topics=[topic], dsn=db, overrides={"kafka": {"brokers": f"127.0.0.1:{dead}"}},
             allow_errors=True)
    api = api_for(s)
    harness.wait_for(lambda: count(db, "SELECT count(*) FROM schema_migrations") > 0, 60,
                     what="the migrations")
    ev = make_event(1, tenant="acme", event_type="lead.created")
    ev_id = scalar(db, "INSERT INTO event_journal (tenant_id, event_type, topic, kafka_partition,"
                       " kafka_offset, event_key, headers, payload) VALUES ('acme', "
                       "'lead.created', %s, 0, 0, 'k', '{}', %s) RETURNING id",
                   (topic, json.dumps(ev)))
    dlq_id = scalar(db, "INSERT INTO dead_letter_queue (topic, kafka_partition, kafka_offset, "
                        "raw_payload, reason, error) VALUES (%s, 0, 1, %s, 'invalid_json', 'x') "
                        "RETURNING id", (topic, b"{broken"))
    assert api.get("/ready").status_code == 503
    assert ok_json(api.get("/health"))["kafka"] == "down"

    answers = {}

    def post(path):
        answers[path] = api.post(path, timeout=120)
    threads = [threading.Thread(target=post, args=(p,))
               for p in (f"/replay/{ev_id}", f"/dlq/{dlq_id}/retry")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(harness.scaled(180))
    error_json(answers[f"/replay/{ev_id}"], 503)
    error_json(answers[f"/dlq/{dlq_id}/retry"], 503)

    jobs = query_dicts(db, "SELECT * FROM replay_jobs ORDER BY id")
    assert len(jobs) == 2
    for j in jobs:
        assert (j["status"], j["total"], j["succeeded"], j["failed"]) == ("failed", 1, 0, 1), j
    assert count(db, "SELECT count(*) FROM replay_job_items WHERE status = 'sent'") == 0
    d = query_dicts(db, "SELECT * FROM dead_letter_queue WHERE id = %s", (dlq_id,))[0]
    assert d["status"] == "pending" and d["resolved_event_id"] is None
    assert count(db, JOURNAL_COUNT) == 1
    samples = scrape(s)
    assert metric(samples, "eventsink_replays_total", source="operator_api", result="ok") == 0
    # (>= 2: see test_dlq_retry_with_slow_bookkeeping_is_produced_once_and_back_to_pending)
    assert metric(samples, "eventsink_replays_total", source="operator_api", result="failed") >= 2


def test_range_replay_by_journal_ids(kafka, db, topic, sink):
    """POST /replay/range with from_id/to_id (inclusive), instead of or beside start/end:
    the seed's outage recovery, "replay 100 to 150", in one request."""
    s = sink(topics=[topic], dsn=db)
    api = api_for(s)
    kafka.produce(topic, event_records([make_event(i, tenant=("acme", "globex")[i % 2])
                                        for i in range(60)]))
    wait_rows(db, JOURNAL_COUNT, 60, sinks=[s])
    ids = [r[0] for r in query(db, "SELECT id FROM event_journal ORDER BY id")]
    lo, hi = ids[10], ids[40]
    acme = [r[0] for r in query(db, "SELECT id FROM event_journal WHERE id BETWEEN %s AND %s"
                                    " AND tenant_id = 'acme' ORDER BY id", (lo, hi))]
    assert ok_json(api.post("/replay/range", json={"from_id": lo, "to_id": hi, "dry_run": True})
                   )["matched"] == 31
    assert ok_json(api.post("/replay/range", params={"from_id": lo, "to_id": hi,
                                                     "tenant": "acme", "dry_run": "true"})
                   )["matched"] == len(acme)
    # beside a time window: both apply
    far = {"start": "2001-01-01T00:00:00Z", "end": "2001-01-02T00:00:00Z"}
    assert ok_json(api.post("/replay/range", json=dict(far, from_id=lo, to_id=hi, dry_run=True))
                   )["matched"] == 0
    for bad in ({"from_id": lo}, {"to_id": hi}, {"from_id": hi, "to_id": lo},
                {"from_id": 0, "to_id": hi}, {"from_id": "x", "to_id": hi}, {}):
        error_json(api.post("/replay/range", json=dict(bad, dry_run=True)), 400, "bad_request")

    job = ok_json(api.post("/replay/range", json={"from_id": lo, "to_id": hi, "tenant": "acme",
                                                   "reason": "outage recovery"}), 202)
    done = wait_job(api, job["job_id"], sinks=[s])
    assert done["status"] == "done" and done["succeeded"] == len(acme), done
    assert done["params"]["from_id"] == lo and done["params"]["to_id"] == hi, done
    wait_rows(db, JOURNAL_COUNT, 60 + len(acme), sinks=[s])
    replayed = [r[0] for r in query(db, "SELECT replayed_from_event_id FROM event_journal"
                                        " WHERE replay_job_id = %s ORDER BY 1", (job["job_id"],))]
    assert replayed == acme
