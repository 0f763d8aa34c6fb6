"""End-to-end tests of the Lua policies (CONTRACT section 6, and /admin/reload and
/admin/policies of section 5): reloads by HTTP and SIGHUP, reloads refused with the old
policies kept, a SIGHUP storm under load, the sandbox seen from Kafka to the DLQ, and the
example policies of policies/examples through the CLI and the service.

Real PostgreSQL, real Kafka, the real binary; assertions on HTTP answers, database rows,
metrics and log lines, never on elapsed time."""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import harness
from apihelpers import (api_for, assert_stored_exactly_once, error_json, metric, ok_json,
                        replay_rows_of_job, scrape, wait_job)
from harness import event_records, make_event, query, query_dicts, scalar, wait_rows
from policyhelpers import (EXAMPLES, RELOAD_FAILED_LOG, REPO, dlq_at, journal_at,
                           policies_status, reload, reload_count, route_policy, sha256_of,
                           wait_reload_count, write_policy)

JOURNAL_COUNT = "SELECT count(*) FROM event_journal"
DLQ_COUNT = "SELECT count(*) FROM dead_letter_queue"


def _events(tenant: str, n: int, start: int, event_type: str = "lead.created") -> list[tuple]:
    return event_records([make_event(start + i, tenant=tenant, event_type=event_type)
                          for i in range(n)])


# --------------------------------------------------------------------------------------
# 1. a good reload changes the decisions from the next batch on
# --------------------------------------------------------------------------------------

def test_reload_by_http_and_sighup_changes_decisions(kafka, db, topic, sink, tmp_path):
    pfile = write_policy(tmp_path / "policies" / "main.lua", route_policy())
    s = sink(topics=[topic], dsn=db, policies=[str(pfile)])
    api = api_for(s)
    ok0 = reload_count(s, "ok")
    err0 = reload_count(s, "error")
    st = policies_status(api)
    assert st["policy_version"] == 1, st
    assert [f["path"] for f in st["files"]] == [str(pfile)], st
    assert st["files"][0]["sha256"] == sha256_of(route_policy()), st

    # version 1: everything with a tenant is journaled
    beta1 = kafka.produce(topic, _events("beta", 10, 0))
    gamma1 = kafka.produce(topic, _events("gamma", 5, 100))
    wait_rows(db, JOURNAL_COUNT, 15, sinks=[s])

    # version 2 by POST /admin/reload: tenant beta goes to the DLQ
    v2 = route_policy(["beta"])
    write_policy(pfile, v2)
    r = reload(api)
    assert ok_json(r) == {"policy_version": 2}
    st = policies_status(api)
    assert st["policy_version"] == 2 and st["last_error"] is None, st
    assert st["files"][0]["sha256"] == sha256_of(v2), st
    assert ok_json(api.get("/health"))["policy_version"] == 2

    beta2 = kafka.produce(topic, _events("beta", 10, 200))
    gamma2 = kafka.produce(topic, _events("gamma", 5, 300))
    wait_rows(db, DLQ_COUNT, 10, sinks=[s])
    wait_rows(db, JOURNAL_COUNT, 20, sinks=[s])
    # the earlier beta events stay in the journal, the later ones are in the DLQ
    assert len(journal_at(db, topic, beta1)) == 10
    assert len(journal_at(db, topic, gamma1 + gamma2)) == 10
    dlq = dlq_at(db, topic, beta2)
    assert len(dlq) == 10
    for row in dlq:
        assert row["reason"] == "policy_route", row
        assert row["policy_version"] == 2, row
        assert row["status"] == "pending", row
        assert json.loads(bytes(row["raw_payload"]))["tenant_id"] == "beta"
    assert not journal_at(db, topic, beta2)

    # version 3 by SIGHUP: beta back to the journal, gamma to the DLQ with a detail
    v3 = route_policy(["gamma"], reason="gamma is quarantined")
    write_policy(pfile, v3)
    s.signal(signal.SIGHUP)
    s.wait_log(r"policies reloaded: version 3", timeout=60)
    st = policies_status(api)
    assert st["policy_version"] == 3 and st["last_error"] is None, st
    assert st["files"][0]["sha256"] == sha256_of(v3), st
    assert isinstance(st["loaded_at"], str) and st["loaded_at"], st

    beta3 = kafka.produce(topic, _events("beta", 10, 400))
    gamma3 = kafka.produce(topic, _events("gamma", 5, 500))
    wait_rows(db, JOURNAL_COUNT, 30, sinks=[s])
    wait_rows(db, DLQ_COUNT, 15, sinks=[s])
    assert len(journal_at(db, topic, beta3)) == 10
    g = dlq_at(db, topic, gamma3)
    assert len(g) == 5
    assert {(x["reason"], x["error"], x["policy_version"]) for x in g} == {
        ("policy_route", "gamma is quarantined", 3)}, g
    # what was decided before stays as it was decided
    assert len(journal_at(db, topic, gamma1 + gamma2)) == 10

    wait_reload_count(s, "ok", ok0 + 2)
    assert reload_count(s, "error") == err0
    samples = scrape(s)
    assert metric(samples, "eventsink_policy_version") == 3
    assert ok_json(api.get("/health"))["policy_version"] == 3
    # the persisted lines of the text log name the tenants of both versions
    assert re.search(r"Persisted lead\.created for tenant beta", s.log_text())


# --------------------------------------------------------------------------------------
# 2. a broken policy is refused and the old one keeps running
# --------------------------------------------------------------------------------------

def _broken_cases(main: Path, extra: Path, good: str):
    good_lines = good.rstrip().splitlines()
    assert good_lines[-1] == "}"
    with_schedule = "\n".join(good_lines[:-1]) + """
  schedules = {
    { name = "nightly", cron = "61 25 * * *", action = "replay_range", params = { window = "24h" } },
  },
}
"""
    return [
        # (name, main text, extra text, the file the message names, a line is expected)
        ("syntax error",
         "return {\n  describe = function(ev)\n    return ev.payload.tenant_id,\n  end,\n}\n",
         "return {}\n", main, True),
        ("runtime error in the self-test",
         "return {\n  describe = function(ev)\n    return ev.payload.customer.id, \"x\"\n"
         "  end,\n}\n",
         "return {}\n", main, True),
        ("describe returns a table",
         "return {\n  describe = function(ev)\n    return {tenant = 'acme'}, 'lead.created'\n"
         "  end,\n}\n",
         "return {}\n", main, False),
        ("route defined in two files",
         good,
         "return {\n  route = function(ev, info) return nil end,\n}\n", extra, False),
        ("bad cron expression", with_schedule, "return {}\n", main, False),
    ]


def test_broken_reloads_are_refused_and_old_policies_stay(kafka, db, topic, sink, tmp_path):
    good = route_policy(["beta"])
    main = write_policy(tmp_path / "policies" / "main.lua", good)
    extra = write_policy(tmp_path / "policies" / "extra.lua", "return {}\n")
    s = sink(topics=[topic], dsn=db, policies=[str(main), str(extra)],
             allow_errors=[RELOAD_FAILED_LOG])
    api = api_for(s)
    ok0, err0 = reload_count(s, "ok"), reload_count(s, "error")
    st0 = policies_status(api)
    assert st0["policy_version"] == 1 and st0["last_error"] is None, st0
    sums0 = [f["sha256"] for f in st0["files"]]

    beta, other = [], []
    failures = []
    cases = _broken_cases(main, extra, good)
    for i, (name, main_text, extra_text, named, has_line) in enumerate(cases):
        write_policy(main, main_text)
        write_policy(extra, extra_text)
        r = reload(api)
        if r.status_code != 422:
            failures.append(f"{name}: expected 422, got {r.status_code} {r.text[:300]}")
            continue
        msg = error_json(r, 422)["message"]
        # Lua shortens long chunk names to "...<tail of the path>": the folder and the
        # file name must be there
        where = f"{named.parent.name}/{named.name}"
        if where not in msg:
            failures.append(f"{name}: the 422 message does not name {named}: {msg!r}")
        if has_line and not re.search(re.escape(where) + r":\d+:", msg):
            failures.append(f"{name}: the 422 message has no line of {named}: {msg!r}")
        st = policies_status(api)
        if st["policy_version"] != 1:
            failures.append(f"{name}: policy_version became {st['policy_version']}")
        if not st["last_error"] or where not in st["last_error"]:
            failures.append(f"{name}: /admin/policies last_error does not name {named}: "
                            f"{st['last_error']!r}")
        if [f["sha256"] for f in st["files"]] != sums0:
            failures.append(f"{name}: /admin/policies shows the sha256 of files not loaded: {st}")
        # the next events are decided by version 1
        beta += kafka.produce(topic, _events("beta", 2, 100 * i))
        other += kafka.produce(topic, _events("acme", 2, 100 * i + 50))

    n = len(cases)
    wait_rows(db, DLQ_COUNT, 2 * n, sinks=[s])
    wait_rows(db, JOURNAL_COUNT, 2 * n, sinks=[s])
    rows = dlq_at(db, topic, beta)
    assert len(rows) == 2 * n
    assert {(x["reason"], x["policy_version"]) for x in rows} == {("policy_route", 1)}, rows
    assert len(journal_at(db, topic, other)) == 2 * n
    assert ok_json(api.get("/health"))["policy_version"] == 1
    wait_reload_count(s, "error", err0 + n)
    assert reload_count(s, "ok") == ok0
    assert len(re.findall(RELOAD_FAILED_LOG, s.log_text())) == n
    assert not failures, "\n".join(failures)

    # a good set afterwards is taken: version 2, and the error is no longer the state
    write_policy(main, route_policy())
    write_policy(extra, "return {}\n")
    assert ok_json(reload(api)) == {"policy_version": 2}
    st = policies_status(api)
    assert st["policy_version"] == 2 and st["last_error"] is None, st
    wait_reload_count(s, "ok", ok0 + 1)


# --------------------------------------------------------------------------------------
# 3. a SIGHUP storm under load
# --------------------------------------------------------------------------------------

def test_sighup_storm_under_load(kafka, db, topic, sink, tmp_path):
    good = route_policy(["hooli"])
    broken = "return {\n  route = function(ev, info)\n    return 'dlq' 'x' (\n  end,\n}\n"
    pfile = write_policy(tmp_path / "policies" / "main.lua", good)
    s = sink(topics=[topic], dsn=db, policies=[str(pfile)], allow_errors=[RELOAD_FAILED_LOG])
    api = api_for(s)
    total = 20_000
    events = [make_event(i) for i in range(total)]
    positions: list = []
    errors: list = []

    def produce():
        try:
            producer = kafka.producer()
            for k in range(0, total, 2000):
                positions.extend(kafka.produce(topic, event_records(events[k:k + 2000],
                                                                    headers=False), producer))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    t = threading.Thread(target=produce)
    t.start()
    sent = 0
    try:
        # at least 60 SIGHUPs, and on while the producer runs (bounded)
        while sent < 60 or (t.is_alive() and sent < 600):
            write_policy(pfile, broken if sent % 2 else good)
            s.signal(signal.SIGHUP)
            sent += 1
            time.sleep(0.02)
            assert s.alive(), harness.tail(s.log_text())
    finally:
        t.join()
    assert not errors, errors
    assert len(positions) == total

    write_policy(pfile, good)
    r = reload(api)
    body = ok_json(r)
    assert body["policy_version"] >= 2, body
    wait_rows(db, f"SELECT (SELECT count(*) FROM event_journal) + "
                  f"(SELECT count(*) FROM dead_letter_queue)", total, timeout=300, sinks=[s])
    assert_stored_exactly_once(db, topic, positions)
    # every version that ever ran had the same route: hooli in the DLQ, the rest journaled
    hooli = sum(1 for e in events if e["tenant_id"] == "hooli")
    assert scalar(db, "SELECT count(*) FROM dead_letter_queue WHERE reason = 'policy_route'") \
        == hooli
    assert scalar(db, "SELECT count(*) FROM event_journal WHERE tenant_id = 'hooli'") == 0
    assert scalar(db, JOURNAL_COUNT) == total - hooli
    assert s.alive()
    st = policies_status(api)
    assert st["policy_version"] == body["policy_version"], st
    assert st["files"][0]["sha256"] == sha256_of(good)
    ok, err = reload_count(s, "ok"), reload_count(s, "error")
    assert ok >= 1 and err >= 1, (ok, err)
    assert ok_json(api.get("/health"))["status"] == "ok"
    assert not harness.sanitizer_lines(s.log_text())


# --------------------------------------------------------------------------------------
# 4. the sandbox, from Kafka to the DLQ
# --------------------------------------------------------------------------------------

SANDBOX_POLICY = r"""
local null = sink.json.null
local MARK = %(mark)s
local BINARY = "\27Lua\84\0\25\147\13\10\26\10\4\8\8\120\86\0\0\0\0\0\0\0\0\0\0\0\40\119\64\1"
local ATTACKS = {
  os_execute = function() os.execute("touch " .. MARK .. "-execute") end,
  io_open = function()
    local f = io.open(MARK .. "-io", "w"); f:write("x"); f:close()
  end,
  require_os = function() local o = require("os"); o.execute("touch " .. MARK .. "-require") end,
  binary_load = function()
    local f, err = load(BINARY)
    if not f then error("load refused: " .. tostring(err)) end
    return f()
  end,
  binary_load_b = function()
    local f, err = load(BINARY, "=chunk", "b")
    if not f then error("load refused: " .. tostring(err)) end
    return f()
  end,
  debug_getinfo = function() return debug.getinfo(1, "S").source end,
  rep_bomb = function() local s = string.rep("x", 1 << 30); return #s end,
  concat_bomb = function()
    local s = "xxxxxxxx"; for _ = 1, 40 do s = s .. s end; return #s
  end,
  infinite_loop = function() while true do end end,
  coroutine_loop = function()
    local co = coroutine.create(function() while true do end end)
    coroutine.resume(co)  -- abandoned: the hook carries on as if nothing happened
    return 1
  end,
  pcall_loop = function()
    pcall(function() while true do end end)  -- swallowed: the hook carries on
    return 1
  end,
}
return {
  describe = function(ev)
    local p = ev.payload
    if type(p) ~= "table" then return nil, nil end
    local attack = p.attack
    if attack ~= nil and attack ~= null then ATTACKS[attack]() end
    return p.tenant_id, p.event_type
  end,
}
"""

# attack -> what the DLQ error must say
SANDBOX_CAUSES = {
    "os_execute": "execute",
    "io_open": "'io'",
    "require_os": "'require'",
    "binary_load": "binary",
    "binary_load_b": "binary",
    "debug_getinfo": "'debug'",
    "rep_bomb": "memory",
    "concat_bomb": "memory",
    "infinite_loop": "instruction budget",
    "coroutine_loop": "instruction budget",
    "pcall_loop": "instruction budget",
}


def test_sandbox_escapes_end_in_the_dlq(kafka, db, topic, sink, tmp_path):
    mark = tmp_path / "escaped"
    pfile = write_policy(tmp_path / "policies" / "sandbox.lua",
                         SANDBOX_POLICY % {"mark": harness.lua_str(str(mark))})
    s = sink(topics=[topic], dsn=db, policies=[str(pfile)])
    api = api_for(s)
    recs = []
    for i, attack in enumerate(SANDBOX_CAUSES):
        ev = make_event(i, tenant="acme", event_type="lead.created")
        ev["attack"] = attack
        recs.append((f"attack-{attack}", json.dumps(ev).encode(), None, 0))
    good = make_event(999, tenant="acme", event_type="lead.created")
    recs.append(("good", json.dumps(good).encode(), None, 0))
    positions = kafka.produce(topic, recs)
    wait_rows(db, JOURNAL_COUNT, 1, sinks=[s])
    wait_rows(db, DLQ_COUNT, len(SANDBOX_CAUSES), sinks=[s])

    rows = {r["event_key"]: r for r in query_dicts(db, "SELECT * FROM dead_letter_queue")}
    problems = []
    for attack, cause in SANDBOX_CAUSES.items():
        row = rows.get(f"attack-{attack}")
        if row is None:
            problems.append(f"{attack}: no DLQ row")
            continue
        if row["reason"] != "policy_error" or cause not in (row["error"] or ""):
            problems.append(f"{attack}: reason {row['reason']!r}, error {row['error']!r} "
                            f"(expected policy_error naming {cause!r})")
        if bytes(row["raw_payload"]) != recs[list(SANDBOX_CAUSES).index(attack)][1]:
            problems.append(f"{attack}: raw_payload is not the bytes as received")
    assert not problems, "\n".join(problems)
    # the stream went on: the good event after them is journaled
    j = journal_at(db, topic, positions[-1:])
    assert len(j) == 1 and j[0]["tenant_id"] == "acme", j
    assert s.alive()
    assert not list(tmp_path.glob("escaped*")), "a policy reached the file system"
    assert ok_json(api.get("/health"))["status"] == "ok"
    samples = scrape(s)
    assert metric(samples, "eventsink_dlq_events_total", reason="policy_error") \
        == len(SANDBOX_CAUSES)


# --------------------------------------------------------------------------------------
# 8. the example policies
# --------------------------------------------------------------------------------------

def _offline_config(factory, policies, name="cfg") -> Path:
    return factory.write_config(topics=["apexflow.leads.created"],
                                dsn="host=127.0.0.1 port=1 dbname=none",
                                policies=[str(p) for p in policies], name=name)


def test_tenant_dlq_example_through_policy_eval(sink_factory_offline, tmp_path):
    cfg = _offline_config(sink_factory_offline, [EXAMPLES / "tenant_dlq.lua"])
    lines = [
        {"topic": "apexflow.leads.created", "partition": 0, "offset": 1, "key": "a",
         "payload": {"tenant_id": "sandbox-qa", "event_type": "lead.created"}},
        {"topic": "apexflow.leads.created", "partition": 0, "offset": 2, "key": "b",
         "payload": {"tenant_id": "acme", "event_type": "lead.exploded"}},
        {"topic": "apexflow.leads.created", "partition": 0, "offset": 3, "key": "c",
         "payload": {"tenant_id": "acme", "event_type": "lead.created"}},
        {"topic": "apexflow.leads.created", "partition": 1, "offset": 4,
         "payload": {"tenant_id": "globex", "type": "deal.won"}},
        {"topic": "apexflow.leads.created", "partition": 1, "offset": 5,
         "payload": {"event_type": "lead.created"}},
    ]
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(x) + "\n" for x in lines))
    r = harness.run_cli("policy-eval", "-c", str(cfg), str(events))
    assert r.returncode == 0, r.stderr
    out = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
    assert len(out) == 5, r.stdout
    sandbox, unknown, known, typed, no_tenant = out
    assert (sandbox["tenant_id"], sandbox["route"], sandbox["reason"]) == \
        ("sandbox-qa", "dlq", "policy_route"), sandbox
    assert sandbox["detail"] == "sandbox tenant sandbox-qa", sandbox
    assert (unknown["route"], unknown["reason"]) == ("dlq", "policy_route"), unknown
    assert unknown["detail"] == "unknown event type lead.exploded", unknown
    assert (known["tenant_id"], known["event_type"], known["route"], known["reason"]) == \
        ("acme", "lead.created", "journal", None), known
    assert (typed["tenant_id"], typed["event_type"], typed["route"]) == \
        ("globex", "deal.won", "journal"), typed
    assert (no_tenant["route"], no_tenant["reason"]) == ("dlq", "missing_tenant"), no_tenant
    assert [x["replay"] for x in out] == [False] * 5


def test_check_accepts_off_hours_and_rejects_unknown_hooks(sink_factory_offline, tmp_path):
    default = REPO / "policies" / "default.lua"
    cfg = _offline_config(sink_factory_offline, [default, EXAMPLES / "off_hours.lua"])
    r = harness.run_cli("check", "-c", str(cfg))
    assert r.returncode == 0, r.stdout + r.stderr

    bad = write_policy(tmp_path / "bad_hook.lua",
                       "return {\n  transform = function(ev) return ev end,\n}\n")
    cfg2 = _offline_config(sink_factory_offline, [default, bad], name="cfg2")
    r = harness.run_cli("check", "-c", str(cfg2))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "transform" in r.stderr and str(bad) in r.stderr, r.stderr


def _off_hours_copy(tmp_path: Path, inside: bool) -> Path:
    text = (EXAMPLES / "off_hours.lua").read_text()
    for needle in ("local BUSINESS_START_HOUR = 8", "local BUSINESS_END_HOUR = 20",
                   "and t.wday ~= 1 and t.wday ~= 7"):
        assert needle in text, f"policies/examples/off_hours.lua no longer has {needle!r}"
    if inside:
        # business hours all day, every day: "now" is always inside
        text = text.replace("local BUSINESS_START_HOUR = 8", "local BUSINESS_START_HOUR = 0")
        text = text.replace("local BUSINESS_END_HOUR = 20", "local BUSINESS_END_HOUR = 24")
        text = text.replace("and t.wday ~= 1 and t.wday ~= 7", "")
    else:
        # an empty window: "now" is always outside
        text = text.replace("local BUSINESS_START_HOUR = 8", "local BUSINESS_START_HOUR = 0")
        text = text.replace("local BUSINESS_END_HOUR = 20", "local BUSINESS_END_HOUR = 0")
    return write_policy(tmp_path / "policies" / ("off_hours_inside.lua" if inside
                                                 else "off_hours_outside.lua"), text)


def _range_body(topic: str) -> dict:
    now = datetime.now(timezone.utc)
    return {"start": (now - timedelta(hours=1)).isoformat(),
            "end": (now + timedelta(hours=1)).isoformat(), "topic": topic}


@pytest.mark.parametrize("inside", [True, False], ids=["business_hours", "off_hours"])
def test_off_hours_replay_guard(kafka, db, topic, sink, tmp_path, inside):
    policy = _off_hours_copy(tmp_path, inside)
    default = REPO / "policies" / "default.lua"
    s = sink(topics=[topic], dsn=db, policies=[str(default), str(policy)])
    api = api_for(s)
    n = 150
    kafka.produce(topic, _events("acme", n, 0))
    wait_rows(db, JOURNAL_COUNT, n, sinks=[s])

    before = time.time()
    r = api.post("/replay/range", json=_range_body(topic))
    body = ok_json(r, 202)
    assert body["matched"] == n, body
    job_id = body["job_id"]
    if inside:
        assert "deferred_until" in body, body
        until = datetime.fromisoformat(body["deferred_until"].replace("Z", "+00:00"))
        assert body["deferred_until"].endswith("Z"), body  # ISO 8601 in UTC, as every time
        assert before - 1 < until.timestamp() <= time.time() + 86400 + 5, body
        # a small replay is allowed at once; the worker takes jobs in id order, so once
        # this later job is done it has looked at the deferred one and left it alone
        one = query(db, "SELECT id FROM event_journal ORDER BY id LIMIT 1")[0][0]
        small = ok_json(api.post("/replay/batch", json={"ids": [one]}), 202)
        assert "deferred_until" not in small, small
        done = wait_job(api, small["job_id"], sinks=[s])
        assert done["status"] == "done" and done["succeeded"] == 1, done
        job = ok_json(api.get(f"/replay/jobs/{job_id}"))
        assert job["status"] == "pending", f"the deferred job did not wait: {job}"
        assert job["succeeded"] == 0 and job["failed"] == 0, job
        wait_rows(db, f"SELECT count(*) FROM event_journal WHERE replay_job_id = "
                      f"{small['job_id']}", 1, sinks=[s])
        assert replay_rows_of_job(db, job_id) == []
    else:
        assert "deferred_until" not in body, body
        job = wait_job(api, job_id, sinks=[s])
        assert job["status"] == "done" and job["succeeded"] == n, job
        wait_rows(db, f"SELECT count(*) FROM event_journal WHERE replay_job_id = {job_id}", n,
                  sinks=[s])


def test_reload_reads_the_policy_list_again_and_names_what_needs_a_restart(kafka, db, topic,
                                                                            sink, tmp_path):
    """A file added to `policies = {...}` in sink.conf.lua is loaded by the next reload
    (HTTP and SIGHUP alike), and one taken out is dropped; an option a reload does not take
    (here http.max_body_bytes) is named in the answer and the log."""
    main = write_policy(tmp_path / "policies" / "main.lua", route_policy())
    extra = EXAMPLES / "off_hours.lua"
    s = sink(topics=[topic], dsn=db, policies=[str(main)], allow_errors=[RELOAD_FAILED_LOG])
    api = api_for(s)
    assert [f["path"] for f in policies_status(api)["files"]] == [str(main)]
    original = s.config_path.read_text()

    def set_config(lua: str) -> None:
        assert original.endswith("return c\n")
        tmp = s.config_path.with_suffix(".tmp")
        tmp.write_text(original[: -len("return c\n")] + lua + "\nreturn c\n")
        tmp.replace(s.config_path)

    set_config(f"c.policies = {{ {harness.lua_str(str(main))}, {harness.lua_str(str(extra))} }}")
    assert ok_json(reload(api)) == {"policy_version": 2}  # nothing else changed
    st = policies_status(api)
    assert [f["path"] for f in st["files"]] == [str(main), str(extra)], st
    assert st["files"][1]["sha256"] == sha256_of(extra.read_text()), st

    # back to one file, by SIGHUP, with an option that takes a restart changed as well
    set_config(f"c.policies = {{ {harness.lua_str(str(main))} }}\nc.http.max_body_bytes = 4096")
    s.signal(signal.SIGHUP)
    s.wait_log(r"policies reloaded: version 3 \(1 file\(s\)\)", timeout=60)
    s.wait_log(r"the configuration file also changes http.max_body_bytes: that takes effect "
               r"only at a restart", timeout=30)
    assert [f["path"] for f in policies_status(api)["files"]] == [str(main)]
    body = ok_json(reload(api))
    assert body == {"policy_version": 4, "restart_needed": ["http.max_body_bytes"]}, body

    # a configuration file that no longer loads: refused, the set in use stays
    set_config("c.polices = {}")
    r = reload(api)
    err = error_json(r, 422)
    assert "polices" in json.dumps(err), err
    assert policies_status(api)["policy_version"] == 4
    set_config("")
    assert ok_json(reload(api)) == {"policy_version": 5}


RAISING_ROUTE = """-- written by the policy tests: route raises for initech
return {
  describe = function(ev) return ev.payload.tenant_id, ev.payload.event_type end,
  route = function(ev, info)
    if info.tenant_id == "initech" then error("no route for initech today") end
    return "journal"
  end,
}
"""


def test_a_route_that_raises_keeps_the_tenant_describe_decided(kafka, db, topic, sink, tmp_path):
    """describe named the tenant, then route raised: the DLQ entry keeps tenant and event
    type (so /dlq?tenant=...&reason=policy_error finds it), its error names the file and
    line, and the log line names tenant, reason and detail."""
    pfile = write_policy(tmp_path / "policies" / "raising.lua", RAISING_ROUTE)
    s = sink(topics=[topic], dsn=db, policies=[str(pfile)])
    api = api_for(s)
    positions = kafka.produce(topic, _events("initech", 3, 0, event_type="deal.won")
                              + _events("acme", 2, 10))
    wait_rows(db, DLQ_COUNT, 3, sinks=[s])
    wait_rows(db, JOURNAL_COUNT, 2, sinks=[s])
    rows = dlq_at(db, topic, positions[:3])
    assert len(rows) == 3
    for row in rows:
        assert row["reason"] == "policy_error", row
        assert row["tenant_id"] == "initech", row
        assert row["event_type"] == "deal.won", row
        assert f"{pfile}:5:" in row["error"] and "no route for initech today" in row["error"], row
    found = ok_json(api.get("/dlq", params={"tenant": "initech", "reason": "policy_error"}))
    assert sorted(e["id"] for e in found["entries"]) == sorted(r["id"] for r in rows), found
    assert {e["event_type"] for e in found["entries"]} == {"deal.won"}, found
    s.wait_log(r"Dead-lettered an event of tenant initech as policy_error \(DLQ entry \d+\): "
               r".*no route for initech today", timeout=30)
