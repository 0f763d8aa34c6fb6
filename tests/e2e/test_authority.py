"""Only eventsink's own replays carry authority (CONTRACT 9.2), against a real PostgreSQL and
a real Kafka broker: a replay made through the API is signed and journaled with
replay_verified = true; markers anyone else writes are journaled as the seed does
(replay_count, replay_source, replayed_from_event_id) with replay_verified = false, and never
resolve a DLQ entry, count for a job, displace a job's replay, or link to a parent of
another tenant or one that does not exist."""
from __future__ import annotations

import json

import harness
from apihelpers import api_for, error_json, header_map, kafka_record_at, ok_json
from harness import make_event, query_dicts, scalar, wait_rows
from policyhelpers import reload, write_policy

JOURNAL_COUNT = "SELECT count(*) FROM event_journal"

HOLD_POLICY = """
return {
  route = function(ev, info)
    if type(ev.payload) == "table" and ev.payload.hold %s then return "dlq", "policy_route" end
  end,
}
"""


def _row_at(db, topic, pos):
    rows = query_dicts(db, "SELECT * FROM event_journal WHERE topic = %s AND kafka_partition = %s"
                           " AND kafka_offset = %s", (topic, *pos))
    return rows[0] if rows else None


def _wait_row_at(db, topic, pos, s):
    harness.wait_for(lambda: _row_at(db, topic, pos) is not None, harness.scaled(60),
                     what=f"journal row at {pos}")
    return _row_at(db, topic, pos)


def _originals(kafka, db, topic, s, tenants):
    pos = kafka.produce(topic, [(f"o-{i}", make_event(i, tenant=t), None, i % 4)
                                for i, t in enumerate(tenants)])
    return [_wait_row_at(db, topic, p, s) for p in pos]


def test_api_replays_are_signed_and_verified(kafka, db, topic, sink):
    s = sink(topics=[topic], dsn=db)
    api = api_for(s)
    (o,) = _originals(kafka, db, topic, s, ["acme"])
    assert o["replay_verified"] is None and o["kafka_timestamp"] is not None
    body = ok_json(api.post(f"/replay/{o['id']}", json={"reason": "test"}), 202)
    k = body["kafka"]
    msg = kafka_record_at(kafka, topic, k["partition"], k["offset"])
    sig = header_map(msg)["x-replay-signature"].decode()
    assert sig.startswith("v1.") and len(sig.split(".")[2]) == 64, sig
    r = _wait_row_at(db, topic, (k["partition"], k["offset"]), s)
    assert (r["replay_verified"], r["replay_job_id"], r["replayed_from_event_id"],
            r["replay_count"]) == (True, body["job_id"], o["id"], 1)
    assert r["kafka_timestamp"] is not None


def test_a_forged_dlq_marker_resolves_nothing_and_the_real_retry_does(kafka, db, topic, sink,
                                                                     tmp_path):
    pfile = write_policy(tmp_path / "policies" / "hold.lua", HOLD_POLICY % "")
    s = sink(topics=[topic], dsn=db, policies=[str(pfile)])
    api = api_for(s)
    held = make_event(1, tenant="globex")
    held["hold"] = True
    kafka.produce(topic, [("held", held, None, 0)])
    wait_rows(db, "SELECT count(*) FROM dead_letter_queue", 1, sinks=[s])
    entry = scalar(db, "SELECT id FROM dead_letter_queue")
    # an acme record that claims to be the retry of globex's entry, in the payload and in
    # the headers, with a made-up job id
    forged = make_event(2, tenant="acme")
    forged.update({"_replayed_from_dlq_id": entry, "_replay_source": "operator_api",
                   "_replay_job_id": 1})
    hdrs = [("x-replayed-from-dlq-id", str(entry).encode()), ("x-replay-job-id", b"1"),
            ("x-replay-source", b"operator_api"), ("x-replay-signature", b"v1.1." + b"0" * 64)]
    (fp,) = kafka.produce(topic, [("forged", json.dumps(forged).encode(), hdrs, 1)])
    f = _wait_row_at(db, topic, fp, s)
    assert (f["replay_verified"], f["replayed_from_dlq_id"], f["replay_job_id"],
            f["replay_count"], f["replay_source"]) == (False, None, None, 1, "operator_api")
    d = query_dicts(db, "SELECT * FROM dead_letter_queue WHERE id = %s", (entry,))[0]
    assert (d["status"], d["resolved_event_id"], d["attempts"]) == ("pending", None, 0), d
    # the entry's own retry still works and resolves it
    write_policy(pfile, HOLD_POLICY % "and false")
    ok_json(reload(api))
    body = ok_json(api.post(f"/dlq/{entry}/retry", json={}), 202)
    k = body["kafka"]
    r = _wait_row_at(db, topic, (k["partition"], k["offset"]), s)
    assert (r["replay_verified"], r["replayed_from_dlq_id"], r["tenant_id"]) == \
        (True, entry, "globex")
    harness.wait_for(lambda: scalar(db, "SELECT status FROM dead_letter_queue WHERE id = %s",
                                    (entry,)) == "resolved", harness.scaled(30),
                     what="the entry resolved by its retry")
    assert scalar(db, "SELECT resolved_event_id FROM dead_letter_queue WHERE id = %s",
                  (entry,)) == r["id"]


def test_a_forged_job_id_does_not_displace_the_real_replay(kafka, db, topic, sink):
    s = sink(topics=[topic], dsn=db)
    api = api_for(s)
    (o,) = _originals(kafka, db, topic, s, ["acme"])
    next_job = (scalar(db, "SELECT coalesce(max(id), 0) FROM replay_jobs") or 0) + 1
    forged = make_event(0, tenant="acme")
    forged.update({"_replayed_from_event_id": o["id"], "_replay_source": "operator_api",
                   "_replay_job_id": next_job})
    hdrs = [("x-replayed-from-event-id", str(o["id"]).encode()),
            ("x-replay-job-id", str(next_job).encode()), ("x-replay-source", b"operator_api")]
    (fp,) = kafka.produce(topic, [("forged", json.dumps(forged).encode(), hdrs, 2)])
    f = _wait_row_at(db, topic, fp, s)
    assert (f["replay_verified"], f["replay_job_id"], f["replayed_from_event_id"],
            f["replay_count"]) == (False, None, o["id"], 1)
    body = ok_json(api.post(f"/replay/{o['id']}", json={}), 202)
    assert body["job_id"] == next_job
    k = body["kafka"]
    r = _wait_row_at(db, topic, (k["partition"], k["offset"]), s)
    assert (r["replay_verified"], r["replay_job_id"], r["replayed_from_event_id"]) == \
        (True, next_job, o["id"])
    assert scalar(db, "SELECT count(*) FROM dead_letter_queue") == 0
    job = ok_json(api.get(f"/replay/jobs/{next_job}"))
    assert (job["status"], job["succeeded"], job["failed"]) == ("done", 1, 0), job


def test_parents_of_another_tenant_or_that_do_not_exist_are_not_linked(kafka, db, topic, sink):
    s = sink(topics=[topic], dsn=db)
    acme, globex = _originals(kafka, db, topic, s, ["acme", "globex"])
    claims = [("cross", globex["id"]), ("dangling", 10**9), ("same", acme["id"])]
    recs = []
    for i, (key, parent) in enumerate(claims):
        ev = make_event(10 + i, tenant="acme")
        ev.update({"_replayed_from_event_id": parent, "_replay_source": "crm-import"})
        recs.append((key, json.dumps(ev).encode(), None, i % 4))
    pos = kafka.produce(topic, recs)
    rows = [_wait_row_at(db, topic, p, s) for p in pos]
    got = [(r["replayed_from_event_id"], r["replay_count"], r["replay_source"],
            r["replay_verified"]) for r in rows]
    assert got == [(None, 1, "crm-import", False), (None, 1, "crm-import", False),
                   (acme["id"], 1, "crm-import", False)], got
    for r, (_, parent) in zip(rows[:2], claims[:2]):
        s.wait_log(rf"event {r['id']} \(tenant acme\) names event {parent} as the one it "
                   r"replays, which does not exist or belongs to another tenant", timeout=30)


def test_the_depth_limit_lists_only_what_the_token_may_see(kafka, db, topic, sink):
    s = sink(topics=[topic], dsn=db,
             overrides={"replay": {"max_depth": 1},
                        "http": {"tokens": [{"name": "acme-ops", "token": "acme-secret",
                                             "role": "operator", "tenants": ["acme"]}]}})
    api = api_for(s, token="acme-secret")
    # a lineage that crosses tenants, written before links were checked (or by a backfill)
    g = scalar(db, "INSERT INTO event_journal (tenant_id, topic, kafka_partition, kafka_offset,"
                   " payload) VALUES ('globex', 'old', 0, 1, '{}') RETURNING id")
    a = scalar(db, "INSERT INTO event_journal (tenant_id, topic, kafka_partition, kafka_offset,"
                   " payload, replay_count, replay_source, replayed_from_event_id) VALUES"
                   " ('acme', 'old', 0, 2, '{}', 1, 'operator_api', %s) RETURNING id", (g,))
    err = error_json(api.post(f"/replay/{a}", json={}), 409, "max_depth")
    # the globex ancestor is not named: the lineage stops where the token's view does
    assert err["message"].split("lineage:")[1].strip() == f"{a} (depth 1)", err
