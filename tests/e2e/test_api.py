"""End-to-end tests of the operator HTTP API (CONTRACT sections 2 and 5): the read
endpoints, every error code with its JSON body, tokens, roles and tenant isolation, the
loopback rule, and a request flood while the service consumes.

Real PostgreSQL, real Kafka, the real binary; assertions on status codes, JSON bodies and
database rows, never on elapsed time."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections import Counter
from datetime import datetime

import requests

import harness
from apihelpers import (ACME_TOKEN, EVENT_COLUMNS, ISO_WITH_ZONE, OPS_TOKEN, TOKENS,
                        TOKENS_OVERRIDE, VIEWER_TOKEN, api_for, assert_stored_exactly_once,
                        error_json, ok_json, wait_job, wait_journal_at)
from harness import event_records, event_stream, make_event, query, query_dicts, scalar, wait_rows

JOURNAL_COUNT = "SELECT count(*) FROM event_journal"
DLQ_COUNT = "SELECT count(*) FROM dead_letter_queue"

# The default policy, plus: events of type spam.detected go to the DLQ (with their tenant).
SPAM_POLICY = """
local null = sink.json.null
return {
  describe = function(ev)
    local p = ev.payload
    if type(p) ~= "table" then return nil, nil end
    local t = p.event_type
    if t == nil or t == null then t = p.type end
    if t == null then t = nil end
    local tenant = p.tenant_id
    if tenant == null then tenant = nil end
    return tenant, t
  end,
  route = function(ev, info)
    if info.tenant_id == nil then return "dlq", "missing_tenant" end
    if info.event_type == "spam.detected" then return "dlq", "policy_route" end
    return nil
  end,
}
"""


def _iso_ok(value) -> datetime:
    assert isinstance(value, str) and ISO_WITH_ZONE.match(value), f"not ISO 8601 with zone: {value!r}"
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert dt.tzinfo is not None
    return dt


def _ids(body, key="events"):
    return [e["id"] for e in body[key]]


def _replay_and_wait(api, db, event_id, s) -> dict:
    body = ok_json(api.post(f"/replay/{event_id}"), 202)
    k = body["kafka"]
    return wait_journal_at(db, k["topic"], k["partition"], k["offset"], sinks=[s])


# --------------------------------------------------------------------------------------
# read endpoints
# --------------------------------------------------------------------------------------

def test_read_endpoints_filters_ordering_and_lineage(kafka, db, topic, sink):
    t2 = kafka.create_topic(partitions=4)
    tenants = ["acme", "globex", "initech"]
    ev1 = [make_event(i, tenant=tenants[i % 3], event_type="lead.created") for i in range(40)]
    ev2 = [make_event(100 + i, tenant=tenants[i % 2], event_type="deal.won") for i in range(20)]
    poison = [("p1", b'{"tenant_id": "acme", "event_type": ', [("n", b"1")], None),
              ("p2", b"not json at all", None, None),
              ("p3", json.dumps({"event_type": "lead.created"}).encode(), None, None)]
    s = sink(topics=[topic, t2], dsn=db)
    api = api_for(s)
    kafka.produce(topic, event_records(ev1) + poison)
    kafka.produce(t2, event_records(ev2))
    wait_rows(db, JOURNAL_COUNT, 60, sinks=[s])
    wait_rows(db, DLQ_COUNT, 3, sinks=[s])

    h = ok_json(api.get("/health"))
    assert h["status"] == "ok" and h["postgres"] == "up" and h["kafka"] == "up", h
    assert isinstance(h["policy_version"], int) and h["policy_version"] >= 1
    r = ok_json(api.get("/ready"))
    assert r.get("postgres", "up") == "up"

    # newest first, default limit 20
    all_ids = [row[0] for row in query(db, "SELECT id FROM event_journal ORDER BY id DESC")]
    body = ok_json(api.get("/events/latest"))
    assert list(body) == ["events"]
    assert _ids(body) == all_ids[:20]
    assert _ids(ok_json(api.get("/events/latest", params={"limit": 5}))) == all_ids[:5]
    full = ok_json(api.get("/events/latest", params={"limit": 1000}))
    assert _ids(full) == all_ids
    assert _ids(ok_json(api.get("/events/latest", params={"limit": 1}))) == all_ids[:1]

    acme = ok_json(api.get("/events/latest", params={"tenant": "acme", "limit": 1000}))["events"]
    assert {e["tenant_id"] for e in acme} == {"acme"}
    assert [e["id"] for e in acme] == [row[0] for row in query(
        db, "SELECT id FROM event_journal WHERE tenant_id = 'acme' ORDER BY id DESC")]
    on_t2 = ok_json(api.get("/events/latest", params={"topic": t2, "limit": 1000}))["events"]
    assert len(on_t2) == 20 and {e["topic"] for e in on_t2} == {t2}
    both = ok_json(api.get("/events/latest", params={"topic": t2, "tenant": "globex",
                                                     "limit": 1000}))["events"]
    assert len(both) == 10 and all(e["topic"] == t2 and e["tenant_id"] == "globex" for e in both)
    assert ok_json(api.get("/events/latest", params={"tenant": "nobody"})) == {"events": []}

    # one event: every column of CONTRACT section 3, as stored
    a_id = acme[-1]["id"]  # the oldest acme event
    ev = ok_json(api.get(f"/events/{a_id}"))
    row = query_dicts(db, "SELECT * FROM event_journal WHERE id = %s", (a_id,))[0]
    for col in EVENT_COLUMNS:
        assert col in ev, f"/events/{a_id} has no {col}: {ev}"
    for col in EVENT_COLUMNS:
        if col != "received_at":
            assert ev[col] == row[col], (col, ev[col], row[col])
    assert _iso_ok(ev["received_at"]) == row["received_at"]
    assert _iso_ok(ev["kafka_timestamp"]) == row["kafka_timestamp"]  # CONTRACT 9.2's columns too
    assert ev["payload"] == {e["seq"]: e for e in ev1 + ev2}[ev["payload"]["seq"]]
    assert ev["tenant_id"] == "acme"
    assert ev["headers"]["source"] == "apexflow-crm"
    assert ev["replay_count"] == 0 and ev["replay_source"] is None
    assert ev["replayed_from_event_id"] is None

    # replays, a replay of the replay, and the lineage both ways
    r1 = _replay_and_wait(api, db, a_id, s)
    r2 = _replay_and_wait(api, db, r1["id"], s)
    assert (r1["replay_count"], r2["replay_count"]) == (1, 2)
    replayed = ok_json(api.get("/events/latest", params={"replayed": "true", "limit": 1000}))
    assert _ids(replayed) == [r2["id"], r1["id"]]
    assert all(e["replay_count"] > 0 for e in replayed["events"])
    originals = ok_json(api.get("/events/latest", params={"replayed": "false", "limit": 1000}))
    assert _ids(originals) == all_ids
    assert _ids(ok_json(api.get("/events/latest")))[:2] == [r2["id"], r1["id"]]
    e2 = ok_json(api.get(f"/events/{r2['id']}"))
    assert e2["replay_count"] == 2 and e2["replay_source"] == "operator_api"
    assert e2["replayed_from_event_id"] == r1["id"]
    _iso_ok(e2["received_at"])

    lin = ok_json(api.get(f"/events/{r1['id']}/lineage"))
    assert [e["id"] for e in lin["ancestors"]] == [a_id]
    assert [e["id"] for e in lin["descendants"]] == [r2["id"]]
    lin = ok_json(api.get(f"/events/{a_id}/lineage"))
    assert lin["ancestors"] == []
    assert [e["id"] for e in lin["descendants"]] == [r1["id"], r2["id"]]
    lin = ok_json(api.get(f"/events/{r2['id']}/lineage"))
    assert [e["id"] for e in lin["ancestors"]] == [a_id, r1["id"]]  # root first
    assert lin["descendants"] == []
    for e in lin["ancestors"]:
        _iso_ok(e["received_at"])

    # the dead-letter queue
    dlq = query_dicts(db, "SELECT * FROM dead_letter_queue ORDER BY id DESC")
    body = ok_json(api.get("/dlq"))
    assert [d["id"] for d in body["entries"]] == [d["id"] for d in dlq]
    pending = ok_json(api.get("/dlq", params={"status": "pending"}))["entries"]
    assert len(pending) == 3 and {d["status"] for d in pending} == {"pending"}
    assert ok_json(api.get("/dlq", params={"status": "resolved"}))["entries"] == []
    assert len(ok_json(api.get("/dlq", params={"limit": 2}))["entries"]) == 2
    p1 = next(d for d in dlq if d["event_key"] == "p1")
    one = ok_json(api.get(f"/dlq/{p1['id']}"))
    for col in ("id", "topic", "kafka_partition", "kafka_offset", "event_key", "headers",
                "reason", "error", "attempts", "status", "created_at", "resolved_event_id"):
        assert col in one, f"/dlq/{{id}} has no {col}: {one}"
    assert one["reason"] == "invalid_json" and one["status"] == "pending"
    assert one["event_key"] == "p1" and one["headers"] == {"n": "1"}
    assert (one["topic"], one["kafka_partition"], one["kafka_offset"]) == (
        topic, p1["kafka_partition"], p1["kafka_offset"])
    if one.get("raw_payload_base64") is not None:
        assert base64.b64decode(one["raw_payload_base64"]) == poison[0][1]
    _iso_ok(one["created_at"])
    ok_json(api.post(f"/dlq/{dlq[0]['id']}/discard"))
    assert [d["id"] for d in ok_json(api.get("/dlq", params={"status": "discarded"}))["entries"]
            ] == [dlq[0]["id"]]
    assert len(ok_json(api.get("/dlq", params={"status": "pending"}))["entries"]) == 2

    # the loaded policies and their sha256
    pol = ok_json(api.get("/admin/policies"))
    assert pol["policy_version"] == h["policy_version"]
    _iso_ok(pol["loaded_at"])
    assert pol["last_error"] is None
    assert len(pol["files"]) == 1
    f = pol["files"][0]
    assert f["path"] == str(harness.DEFAULT_POLICY.resolve())
    assert f["sha256"] == hashlib.sha256(harness.DEFAULT_POLICY.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------
# error codes
# --------------------------------------------------------------------------------------

def test_every_error_code_has_the_json_error_body(kafka, db, topic, sink):
    s = sink(topics=[topic], dsn=db,
             overrides={"http": {"max_body_bytes": 4096}, "replay": {"confirm_above": 5}})
    api = api_for(s)
    kafka.produce(topic, event_records(event_stream(10, seed=7)))
    wait_rows(db, JOURNAL_COUNT, 10, sinks=[s])
    some_id = scalar(db, "SELECT min(id) FROM event_journal")

    # 400 bad input
    for path in ("/events/abc", "/events/12x/lineage", "/dlq/abc", "/events/-1", "/events/0",
                 "/replay/jobs/x1"):
        error_json(api.get(path), 400, "bad_request")
    for limit in ("0", "1001", "ten", "-5", ""):
        if limit:
            error_json(api.get("/events/latest", params={"limit": limit}), 400, "bad_request")
    error_json(api.get("/dlq", params={"limit": "0"}), 400, "bad_request")
    error_json(api.get("/dlq", params={"limit": "1001"}), 400, "bad_request")
    error_json(api.get("/dlq", params={"status": "lost"}), 400, "bad_request")
    error_json(api.get("/events/latest", params={"replayed": "maybe"}), 400, "bad_request")
    json_hdr = {"Content-Type": "application/json"}
    for body in (b'{"ids": [1, 2', b"{not json}", b'{"ids": [1]} trailing', b"[1, 2]"):
        error_json(api.post("/replay/batch", data=body, headers=json_hdr), 400, "bad_request")
    error_json(api.post(f"/replay/{some_id}", data=b'{"reason": ', headers=json_hdr), 400,
               "bad_request")
    error_json(api.post("/dlq/retry", data=b"{{", headers=json_hdr), 400, "bad_request")
    error_json(api.post("/replay/batch", json={"ids": "1,2"}), 400, "bad_request")
    error_json(api.post("/replay/batch", json={"ids": [1, "two"]}), 400, "bad_request")
    error_json(api.post("/replay/batch", json={"ids": []}), 400, "bad_request")
    for start in ("not-a-date", "2026-13-45T99:00:00Z", "2026-01-01T10:00:00+99:99"):
        error_json(api.post("/replay/range", json={"start": start, "end": "2030-01-01T00:00:00Z",
                                                   "dry_run": True}), 400, "bad_request")
    error_json(api.post("/replay/range", params={"start": "2026-01-01T00:00:00Z",
                                                 "end": "not a time", "dry_run": "true"}),
               400, "bad_request")
    error_json(api.post("/replay/range", json={"start": "2030-01-01T00:00:00Z",
                                               "end": "2020-01-01T00:00:00Z"}), 400)
    error_json(api.post("/replay/range", json={"end": "2030-01-01T00:00:00Z"}), 400)

    # 404 not found
    for path in ("/nope", "/events", "/events/1/lineage/more", "/replay", "/metrics"):
        error_json(api.get(path), 404, "not_found")
    for path in ("/events/99999999", "/events/99999999/lineage", "/dlq/99999999",
                 "/replay/jobs/99999999"):
        error_json(api.get(path), 404, "not_found")
    error_json(api.post("/replay/99999999"), 404, "not_found")
    error_json(api.post("/replay/jobs/99999999/cancel"), 404, "not_found")
    error_json(api.post("/dlq/99999999/retry"), 404, "not_found")
    error_json(api.post("/dlq/99999999/discard"), 404, "not_found")

    # 405 method not allowed, with Allow
    for method, path, allow in (("POST", "/health", "GET"), ("DELETE", f"/events/{some_id}", "GET"),
                                ("PUT", "/events/latest", "GET"), ("GET", "/replay/batch", "POST"),
                                ("GET", f"/replay/{some_id}", "POST"),
                                ("GET", "/replay/jobs/1/cancel", "POST"),
                                ("DELETE", "/dlq/1/retry", "POST")):
        r = api.request(method, path)
        error_json(r, 405, "method_not_allowed")
        assert allow in r.headers.get("Allow", ""), (method, path, r.headers)

    # 413 body too large: announced by Content-Length, and chunked
    big = json.dumps({"ids": [some_id], "reason": "x" * 5000}).encode()
    error_json(api.post("/replay/batch", data=big, headers=json_hdr), 413, "body_too_large")

    def chunks():
        for i in range(0, len(big), 1000):
            yield big[i:i + 1000]
    r = api.post("/replay/batch", data=chunks(), headers=json_hdr)
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    error_json(r, 413, "body_too_large")
    r = api.post(f"/replay/{some_id}", data=chunks(), headers=json_hdr)
    error_json(r, 413, "body_too_large")
    # just under the limit is fine (chunked too), and nothing was replayed by the 413s
    small = json.dumps({"ids": [some_id], "reason": "y" * 3000}).encode()
    job = ok_json(api.post("/replay/batch", data=iter([small[:1500], small[1500:]]),
                           headers=json_hdr), 202)
    assert job["total"] == 1
    assert scalar(db, "SELECT count(*) FROM replay_jobs") == 1
    done = wait_job(api, job["job_id"], sinks=[s])
    assert done["status"] == "done" and done["succeeded"] == 1

    # 409 conflict: cancelling a job that has ended; discarding twice
    error_json(api.post(f"/replay/jobs/{job['job_id']}/cancel"), 409)
    poison_pos = kafka.produce(topic, [("bad", b"{oops", None, None)])
    wait_rows(db, DLQ_COUNT, 1, sinks=[s])
    dlq_id = scalar(db, "SELECT id FROM dead_letter_queue")
    ok_json(api.post(f"/dlq/{dlq_id}/discard"))
    error_json(api.post(f"/dlq/{dlq_id}/discard"), 409)
    error_json(api.post(f"/dlq/{dlq_id}/retry"), 409)
    assert poison_pos

    # 422 rejected: a range over replay.confirm_above (5) without "confirm": true
    rng = {"start": "2000-01-01T00:00:00Z", "end": "2100-01-01T00:00:00+00:00"}
    assert ok_json(api.post("/replay/range", json=dict(rng, dry_run=True)))["matched"] == 10
    jobs_before = scalar(db, "SELECT count(*) FROM replay_jobs")
    error_json(api.post("/replay/range", json=rng), 422)
    error_json(api.post("/replay/range", json=dict(rng, confirm=False)), 422)
    assert scalar(db, "SELECT count(*) FROM replay_jobs") == jobs_before
    ok = ok_json(api.post("/replay/range", json=dict(rng, confirm=True)), 202)
    assert ok["matched"] == 10
    wait_job(api, ok["job_id"], sinks=[s])


# --------------------------------------------------------------------------------------
# tokens, roles and tenants
# --------------------------------------------------------------------------------------

def test_tokens_roles_and_tenant_isolation(kafka, db, topic, sink, tmp_path):
    policy = tmp_path / "spam.lua"
    policy.write_text(SPAM_POLICY)
    s = sink(topics=[topic], dsn=db, policies=[str(policy)], overrides=TOKENS_OVERRIDE)
    anon, ops = api_for(s), api_for(s, OPS_TOKEN)
    acme, viewer = api_for(s, ACME_TOKEN), api_for(s, VIEWER_TOKEN)
    events = ([make_event(i, tenant="acme") for i in range(10)]
              + [make_event(100 + i, tenant="globex") for i in range(10)]
              + [make_event(200, tenant="acme", event_type="spam.detected"),
                 make_event(201, tenant="globex", event_type="spam.detected")])
    kafka.produce(topic, event_records(events))
    wait_rows(db, JOURNAL_COUNT, 20, sinks=[s])
    wait_rows(db, DLQ_COUNT, 2, sinks=[s])
    acme_ids = [r[0] for r in query(db, "SELECT id FROM event_journal WHERE tenant_id = 'acme' "
                                        "ORDER BY id")]
    globex_ids = [r[0] for r in query(db, "SELECT id FROM event_journal WHERE tenant_id = "
                                          "'globex' ORDER BY id")]
    dlq = {t: i for i, t in query(db, "SELECT id, tenant_id FROM dead_letter_queue")}
    assert set(dlq) == {"acme", "globex"}, dlq

    # /health and /ready need no token; everything else does
    assert ok_json(anon.get("/health"))["status"] == "ok"
    assert anon.get("/ready").status_code == 200
    for path in ("/events/latest", f"/events/{acme_ids[0]}", "/dlq", "/replay/jobs",
                 "/admin/policies"):
        error_json(anon.get(path), 401, "unauthorized")
        error_json(anon.get(path, token="not-a-token"), 401, "unauthorized")
        error_json(anon.get(path, token=OPS_TOKEN + "x"), 401, "unauthorized")
    error_json(anon.get("/events/latest", headers={"Authorization": f"Basic {OPS_TOKEN}"}), 401)
    error_json(anon.post(f"/replay/{acme_ids[0]}"), 401, "unauthorized")
    error_json(anon.post(f"/replay/{acme_ids[0]}", token="nope"), 401, "unauthorized")

    # the viewer reads but may not replay, retry or discard
    assert len(ok_json(viewer.get("/events/latest", params={"limit": 1000}))["events"]) == 20
    error_json(viewer.post(f"/replay/{acme_ids[0]}"), 403, "forbidden")
    error_json(viewer.post("/replay/batch", json={"ids": acme_ids}), 403, "forbidden")
    error_json(viewer.post(f"/dlq/{dlq['acme']}/discard"), 403, "forbidden")
    error_json(viewer.post(f"/dlq/{dlq['acme']}/retry"), 403, "forbidden")
    assert scalar(db, "SELECT count(*) FROM replay_jobs") == 0

    # an unscoped operator replays a globex event
    ops_job = ok_json(ops.post(f"/replay/{globex_ids[0]}"), 202)
    k = ops_job["kafka"]
    g_replay = wait_journal_at(db, k["topic"], k["partition"], k["offset"], sinks=[s])
    assert g_replay["tenant_id"] == "globex"
    assert job_requested_by(db, ops_job["job_id"]) == "ops"

    # the acme token sees acme only, and globex ids are "not found", not "forbidden"
    seen = ok_json(acme.get("/events/latest", params={"limit": 1000}))["events"]
    assert [e["id"] for e in seen] == acme_ids[::-1]
    assert ok_json(acme.get("/events/latest", params={"tenant": "globex"})) == {"events": []}
    assert ok_json(acme.get("/events/latest", params={"replayed": "true"})) == {"events": []}
    for gid in (globex_ids[0], g_replay["id"]):
        error_json(acme.get(f"/events/{gid}"), 404, "not_found")
        error_json(acme.get(f"/events/{gid}/lineage"), 404, "not_found")
        error_json(acme.post(f"/replay/{gid}"), 404, "not_found")
    assert ok_json(acme.get(f"/events/{acme_ids[0]}"))["tenant_id"] == "acme"
    assert [d["id"] for d in ok_json(acme.get("/dlq"))["entries"]] == [dlq["acme"]]
    assert ok_json(acme.get("/dlq", params={"tenant": "globex"}))["entries"] == []
    error_json(acme.get(f"/dlq/{dlq['globex']}"), 404, "not_found")
    error_json(acme.post(f"/dlq/{dlq['globex']}/retry"), 404, "not_found")
    error_json(acme.post(f"/dlq/{dlq['globex']}/discard"), 404, "not_found")
    assert ok_json(acme.get(f"/dlq/{dlq['acme']}"))["tenant_id"] == "acme"
    assert ok_json(acme.get("/replay/jobs"))["jobs"] == []
    error_json(acme.get(f"/replay/jobs/{ops_job['job_id']}"), 404, "not_found")
    error_json(acme.post(f"/replay/jobs/{ops_job['job_id']}/cancel"), 404, "not_found")
    assert {d["tenant_id"] for d in ok_json(ops.get("/dlq"))["entries"]} == {"acme", "globex"}
    assert len(ok_json(ops.get("/events/latest", params={"limit": 1000}))["events"]) == 21

    # the acme token replays acme events only
    mine = ok_json(acme.post(f"/replay/{acme_ids[0]}"), 202)
    k = mine["kafka"]
    a_replay = wait_journal_at(db, k["topic"], k["partition"], k["offset"], sinks=[s])
    assert a_replay["tenant_id"] == "acme" and a_replay["replayed_from_event_id"] == acme_ids[0]
    lin = ok_json(acme.get(f"/events/{acme_ids[0]}/lineage"))
    assert [e["id"] for e in lin["descendants"]] == [a_replay["id"]]
    assert [j["id"] for j in ok_json(acme.get("/replay/jobs"))["jobs"]] == [mine["job_id"]]
    batch = ok_json(acme.post("/replay/batch", json={"ids": [acme_ids[1], globex_ids[1]]}), 202)
    assert batch["total"] == 2
    done = wait_job(acme, batch["job_id"], sinks=[s])
    assert (done["status"], done["succeeded"], done["failed"]) == ("done", 1, 1)
    rng = {"start": "2000-01-01T00:00:00Z", "end": "2100-01-01T00:00:00Z", "dry_run": True}
    assert ok_json(acme.post("/replay/range", json=dict(rng, tenant="globex")))["matched"] == 0
    assert ok_json(acme.post("/replay/range", json=rng))["matched"] == 10
    assert ok_json(ops.post("/replay/range", json=rng))["matched"] == 20
    # nothing of globex was replayed by the acme token
    harness.wait_for(lambda: scalar(db, "SELECT count(*) FROM event_journal WHERE "
                                        "replay_count > 0") == 3, 60, what="3 replay rows")
    assert scalar(db, "SELECT count(*) FROM event_journal WHERE replay_count > 0 AND "
                      "tenant_id = 'globex'") == 1


def job_requested_by(db, job_id):
    return scalar(db, "SELECT requested_by FROM replay_jobs WHERE id = %s", (job_id,))


def test_check_refuses_a_non_loopback_listen_without_tokens(sink_factory_offline):
    port = harness.free_port()
    common = dict(topics=["apexflow.leads.created"], brokers="127.0.0.1:9",
                  dsn="host=127.0.0.1 port=9 dbname=nowhere user=eventsink")
    conf = sink_factory_offline.write_config(
        **common, overrides={"http": {"listen": f"0.0.0.0:{port}"}}, name="open")
    r = harness.run_cli("check", "-c", str(conf))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "http.listen" in r.stdout + r.stderr
    conf = sink_factory_offline.write_config(
        **common, overrides={"http": {"listen": f"0.0.0.0:{port}", "tokens": TOKENS}},
        name="tokens")
    r = harness.run_cli("check", "-c", str(conf))
    assert r.returncode == 0, r.stdout + r.stderr
    conf = sink_factory_offline.write_config(
        **common, overrides={"http": {"listen": f"127.0.0.1:{port}"}}, name="loopback")
    r = harness.run_cli("check", "-c", str(conf))
    assert r.returncode == 0, r.stdout + r.stderr


# --------------------------------------------------------------------------------------
# a request flood while consuming
# --------------------------------------------------------------------------------------

def test_request_flood_while_consuming_loses_nothing(kafka, db, topic, sink):
    total, flood_threads, per_thread = 20_000, 4, 500
    records = event_records(event_stream(total, seed=91))
    s = sink(topics=[topic], dsn=db, batch={"max_events": 500, "max_wait_ms": 50})
    api = api_for(s)
    produced: list = []
    flood_started = threading.Event()
    errors: list = []

    def produce():
        try:
            p = kafka.producer()
            for i in range(0, total, 1000):
                if i >= total // 2:
                    flood_started.wait(harness.scaled(300))
                produced.extend(kafka.produce(topic, records[i:i + 1000], producer=p))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    prod = threading.Thread(target=produce, daemon=True)
    prod.start()
    harness.wait_at_least(db, JOURNAL_COUNT, 1000, timeout=300, sinks=[s])
    at_start = harness.count_or_zero(db, JOURNAL_COUNT)

    statuses: Counter = Counter()
    health: Counter = Counter()
    lock = threading.Lock()
    stop_health = threading.Event()

    def flood():
        sess = requests.Session()
        for _ in range(per_thread):
            try:
                r = sess.get(api.base + "/events/latest", params={"limit": 100},
                             timeout=harness.scaled(60))
                ok = r.status_code != 200 or len(r.json()["events"]) <= 100
                code = r.status_code if ok else "bad body"
            except requests.RequestException as e:
                code = type(e).__name__
            with lock:
                statuses[code] += 1

    def watch_health():
        sess = requests.Session()
        while not stop_health.is_set():
            try:
                r = sess.get(api.base + "/health", timeout=harness.scaled(30))
                code = r.status_code if r.json().get("status") == "ok" else "bad body"
            except (requests.RequestException, ValueError) as e:
                code = type(e).__name__
            with lock:
                health[code] += 1

    hw = threading.Thread(target=watch_health, daemon=True)
    hw.start()
    threads = [threading.Thread(target=flood, daemon=True) for _ in range(flood_threads)]
    for t in threads:
        t.start()
    flood_started.set()
    for t in threads:
        t.join(harness.scaled(600))
    stop_health.set()
    hw.join(harness.scaled(60))
    assert not any(t.is_alive() for t in threads), "the flood did not finish"
    prod.join(harness.scaled(300))
    assert not errors, errors
    assert at_start < total  # the flood ran while events were still coming in

    assert sum(statuses.values()) == flood_threads * per_thread
    bad = {c: n for c, n in statuses.items() if c not in (200, 429)}
    assert not bad, f"requests that failed during the flood: {dict(statuses)}"
    assert statuses[200] > 0
    assert health and set(health) == {200}, f"/health during the flood: {dict(health)}"

    wait_rows(db, JOURNAL_COUNT, total, timeout=600, sinks=[s])
    assert len(produced) == total
    assert_stored_exactly_once(db, topic, produced)
    assert scalar(db, DLQ_COUNT) == 0
    assert ok_json(api.get("/health"))["status"] == "ok"
    assert s.terminate() == 0


def _pages(api, path: str, key: str, params: dict) -> list[int]:
    """Every id of a list endpoint, page by page with before_id."""
    ids: list[int] = []
    before = None
    while True:
        q = dict(params, **({"before_id": before} if before else {}))
        page = ok_json(api.get(path, params=q))[key]
        if not page:
            return ids
        got = [e["id"] for e in page]
        assert got == sorted(got, reverse=True), got
        ids += got
        before = got[-1]


def test_paging_and_filters_of_events_latest_and_dlq_agree_with_sql(kafka, db, topic, sink):
    s = sink(topics=[topic], dsn=db)
    api = api_for(s)
    evs = [make_event(i, tenant="acme" if i % 3 else "globex",
                      event_type="deal.won" if i % 4 == 0 else "lead.created") for i in range(40)]
    untenanted = [make_event(100 + i) for i in range(12)]
    for e in untenanted:
        del e["tenant_id"]  # missing_tenant: the DLQ
    evs += untenanted
    # three waves, so that received_at differs between them (a batch shares its time)
    for lo, hi, rows in ((0, 15, 15), (15, 30, 30), (30, 52, 40)):
        kafka.produce(topic, event_records(evs[lo:hi]))
        wait_rows(db, JOURNAL_COUNT, rows, sinks=[s])
    wait_rows(db, DLQ_COUNT, 12, sinks=[s])

    all_ids = [r[0] for r in query(db, "SELECT id FROM event_journal ORDER BY id DESC")]
    assert _pages(api, "/events/latest", "events", {"limit": 7}) == all_ids
    won = [r[0] for r in query(db, "SELECT id FROM event_journal WHERE event_type = 'deal.won'"
                                   " AND tenant_id = 'acme' ORDER BY id DESC")]
    assert won and _pages(api, "/events/latest", "events",
                          {"limit": 3, "event_type": "deal.won", "tenant": "acme"}) == won
    # since (inclusive) and until (exclusive), ISO 8601 with a zone
    times = query(db, "SELECT id, to_char(received_at AT TIME ZONE 'UTC',"
                      " 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM event_journal ORDER BY id")
    # the second wave (two writer lanes may give a later batch lower ids: min, not first)
    since, until = min(t for _, t in times[15:30]), min(t for _, t in times[30:40])
    want = [r[0] for r in query(db, "SELECT id FROM event_journal WHERE received_at >= %s::timestamptz"
                                    " AND received_at < %s::timestamptz ORDER BY id DESC",
                                [since, until])]
    assert len(want) == 15 and _pages(api, "/events/latest", "events",
                                      {"limit": 1000, "since": since, "until": until}) == want

    dlq_ids = [r[0] for r in query(db, "SELECT id FROM dead_letter_queue ORDER BY id DESC")]
    assert _pages(api, "/dlq", "entries", {"limit": 5}) == dlq_ids

    for path, params, what in (("/events/latest", {"before_id": "x"}, "before_id"),
                               ("/events/latest", {"before_id": "0"}, "before_id"),
                               ("/events/latest", {"since": "now"}, "since"),
                               ("/events/latest", {"until": "yesterday"}, "until"),
                               ("/dlq", {"before_id": "-3"}, "before_id")):
        body = error_json(api.get(path, params=params), 400, "bad_request")
        assert what in body["message"], body
    # a time PostgreSQL cannot read is a 400 too
    error_json(api.get("/events/latest", params={"since": "2026-13-45T99:00:00Z"}), 400)


def _outside_strings(text: str) -> str:
    """The characters of a JSON text that are not inside a string."""
    out, in_str, esc = [], False, False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
            continue
        if ch == '"':
            in_str = True
        out.append(ch)
    return "".join(out)


def test_every_json_answer_is_compact_with_one_trailing_newline(kafka, db, topic, sink):
    s = sink(topics=[topic], dsn=db)
    api = api_for(s)
    kafka.produce(topic, event_records([make_event(i, tenant="acme") for i in range(3)]))
    wait_rows(db, JOURNAL_COUNT, 3, sinks=[s])
    first = scalar(db, "SELECT min(id) FROM event_journal")
    for path in ("/health", "/ready", "/events/latest?limit=3", f"/events/{first}",
                 f"/events/{first}/lineage", "/dlq", "/replay/jobs", "/admin/policies",
                 "/events/999999999", "/events/latest?limit=0", "/nowhere"):
        r = api.get(path)
        body = r.text
        assert body.endswith("}\n") and not body.endswith("\n\n"), (path, body[-40:])
        json.loads(body)
        outside = _outside_strings(body[:-1])
        assert not any(c in outside for c in " \n\r\t"), (path, body[:200])
