"""A policy can never stall eventsink, /health tells the truth, SIGTERM is bounded
(CONTRACT 9.1), against a real PostgreSQL and a real Kafka broker.

Each escape that used to run forever in C (string.rep of empty strings, table.move over
maxinteger, a finalizer that loops) and one long C call that nobody patched (table.sort of
a big table) is tried as a live event, at reload, in `eventsink check` and in the
replay_source hook; a journal write that waits on a table lock shows as stalled; SIGTERM
ends the process within 10 s with the journal locked and with a hook that does not come
back, and nothing is lost after a restart."""
from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time

import harness
from apihelpers import (api_for, assert_stored_exactly_once, error_json, metric, ok_json, scrape)
from harness import make_event, query_dicts, scalar, wait_rows
from policyhelpers import RELOAD_FAILED_LOG, reload, write_policy

JOURNAL_COUNT = "SELECT count(*) FROM event_journal"
DLQ_COUNT = "SELECT count(*) FROM dead_letter_queue"

# a table of ~950,000 small integers, sorted in one C call (no hook fires inside it), then
# a loop so that the hook runs once the sort is back: the hook or the watchdog stops it
BIG_SORT = ("local t = table.pack(string.byte(string.rep('qwertyuiopasdfghjklzx', 45000), 1, -1)) "
            "table.sort(t) for _ = 1, 5000 do end")

ESCAPES = {
    # the three of the issue: rep is answered at once now, the others refused
    "rep_empty": ("local s = string.rep('', math.maxinteger) assert(s == '')", None),
    "move_huge": ("table.move({}, 1, math.maxinteger - 1, 1, {})", "table.move"),
    "gc_loop": ("setmetatable({}, {__gc = function() while true do end end})", "finalizers"),
    # a long C call nobody listed
    "big_sort": (BIG_SORT, "sandbox.max_call_ms"),
    # Lua-level ones, for the record
    "coroutine_loop": ("coroutine.wrap(function() while true do end end)()", "instruction budget"),
    "pattern": ("string.find(string.rep('a', 200000), '.-.-.-b')", "pattern matching budget"),
}

LIVE_POLICY = """
local ATTACKS = {
%s
}
return {
  describe = function(ev)
    local p = ev.payload
    local attack = type(p) == "table" and ATTACKS[p.attack]
    if attack then attack() end
    return p.tenant_id, p.event_type
  end,
}
"""

# what the sandbox allows for these tests: short calls, so that the big sort overruns
SANDBOX = "c.sandbox = { max_call_ms = 50 }\n"


def _live_policy() -> str:
    body = ",\n".join(f"  {name} = function() {code} end" for name, (code, _) in ESCAPES.items())
    return LIVE_POLICY % body


def test_escapes_as_live_events_go_to_the_dlq_and_the_stream_goes_on(kafka, db, topic, sink,
                                                                   tmp_path):
    pfile = write_policy(tmp_path / "policies" / "live.lua", _live_policy())
    s = sink(topics=[topic], dsn=db, policies=[str(pfile)], extra_config=SANDBOX)
    api = api_for(s)
    recs = []
    for i, name in enumerate(ESCAPES):
        ev = make_event(i, tenant="acme", event_type="lead.created")
        ev["attack"] = name
        # every partition gets attacks and good events, interleaved
        recs.append((f"attack-{name}", json.dumps(ev).encode(), None, i % 4))
        for k in range(5):
            good = make_event(100 + 10 * i + k, tenant="acme", event_type="lead.created")
            recs.append((f"good-{i}-{k}", json.dumps(good).encode(), None, (i + k) % 4))
    positions = kafka.produce(topic, recs)
    refused = [n for n, (_, cause) in ESCAPES.items() if cause]
    good = len(recs) - len(refused)
    wait_rows(db, JOURNAL_COUNT, good, sinks=[s], timeout=120)
    wait_rows(db, DLQ_COUNT, len(refused), sinks=[s], timeout=60)
    rows = {r["event_key"]: r for r in query_dicts(db, "SELECT * FROM dead_letter_queue")}
    problems = []
    for name, (_, cause) in ESCAPES.items():
        row = rows.get(f"attack-{name}")
        if cause is None:
            if row is not None:
                problems.append(f"{name}: dead-lettered ({row['error']}), expected journaled")
            continue
        if row is None:
            problems.append(f"{name}: no DLQ row")
        elif row["reason"] != "policy_error" or cause not in (row["error"] or ""):
            problems.append(f"{name}: {row['reason']} {row['error']!r}, expected policy_error "
                            f"naming {cause!r}")
    assert not problems, "\n".join(problems)
    # every record is in the journal or the DLQ, once
    assert_stored_exactly_once(db, topic, positions)
    health = ok_json(api.get("/health"))
    assert health["status"] == "ok", health
    assert s.alive()


def test_reload_that_trips_a_limit_is_refused_and_the_old_set_runs(kafka, db, topic, sink,
                                                                  tmp_path):
    pfile = write_policy(tmp_path / "policies" / "p.lua",
                         "return {describe = function(ev) return 'old-' .. (ev.payload.tenant_id or"
                         " 'none'), ev.payload.event_type end}\n")
    s = sink(topics=[topic], dsn=db, policies=[str(pfile)], extra_config=SANDBOX,
             allow_errors=[RELOAD_FAILED_LOG])
    api = api_for(s)
    kafka.produce(topic, [(None, make_event(1, tenant="acme"), None, 0)])
    wait_rows(db, JOURNAL_COUNT, 1, sinks=[s])
    for body, cause in [(f"{BIG_SORT} return {{}}", "sandbox.max_call_ms"),
                        ("table.move({}, 1, math.maxinteger - 1, 1, {}) return {}", "table.move"),
                        ("return {describe = function(ev) " + BIG_SORT + " return 'x' end}",
                         "sandbox.max_call_ms")]:
        write_policy(pfile, body)
        t0 = time.monotonic()
        r = reload(api)
        took = time.monotonic() - t0
        err = error_json(r, 422)
        assert cause in err["message"], err
        assert took < harness.scaled(10), f"the reload answered after {took:.1f} s"
    kafka.produce(topic, [(None, make_event(2, tenant="acme"), None, 1)])
    wait_rows(db, JOURNAL_COUNT, 2, sinks=[s])
    tenants = {r[0] for r in harness.query(db, "SELECT tenant_id FROM event_journal")}
    assert tenants == {"old-acme"}, tenants
    assert ok_json(api.get("/health"))["policy_version"] == 1


def test_check_exits_2_within_seconds(sink_factory_offline, tmp_path):
    for name, (code, cause) in ESCAPES.items():
        if cause is None:
            continue
        pfile = write_policy(tmp_path / "policies" / f"{name}.lua", f"{code}\nreturn {{}}\n")
        cfg = sink_factory_offline.write_config(
            topics=["apexflow.leads.created"], dsn="host=127.0.0.1 port=1 dbname=none",
            policies=[str(pfile)], name=f"cfg-{name}", extra_config=SANDBOX)
        t0 = time.monotonic()
        p = subprocess.run([str(harness.eventsink_bin()), "check", "-c", str(cfg)],
                           capture_output=True, text=True, timeout=60)
        took = time.monotonic() - t0
        assert p.returncode == 2, (name, p.returncode, p.stdout, p.stderr)
        assert cause in p.stderr, (name, p.stderr)
        assert took < harness.scaled(5), f"{name}: check took {took:.1f} s"


def test_stuck_replay_source_answers_an_error_and_others_are_served(kafka, db, topic, sink,
                                                                    tmp_path):
    pfile = write_policy(tmp_path / "policies" / "rs.lua",
                         "return {replay_source = function(req)\n"
                         f"  if req.reason == 'stuck' then {BIG_SORT} end\n"
                         "  return 'tagged'\n"
                         "end}\n")
    s = sink(topics=[topic], dsn=db, policies=[str(pfile)], extra_config=SANDBOX)
    api = api_for(s)
    kafka.produce(topic, [(None, make_event(i, tenant="acme"), None, i % 4) for i in range(3)])
    wait_rows(db, JOURNAL_COUNT, 3, sinks=[s])
    ids = [r[0] for r in harness.query(db, "SELECT id FROM event_journal ORDER BY id")]
    answers: dict = {}

    def post(key, eid, reason):
        t0 = time.monotonic()
        answers[key] = (api.post(f"/replay/{eid}", json={"reason": reason}),
                        time.monotonic() - t0)

    threads = [threading.Thread(target=post, args=("stuck", ids[0], "stuck")),
               threading.Thread(target=post, args=("fine1", ids[1], "fine")),
               threading.Thread(target=post, args=("fine2", ids[2], "fine"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=harness.scaled(60))
    r, took = answers["stuck"]
    err = error_json(r, 422, "policy_error")
    assert "sandbox.max_call_ms" in err["message"], err
    assert took < harness.scaled(10), took
    for key in ("fine1", "fine2"):
        r, _ = answers[key]
        assert ok_json(r, 202)["replay_source"] == "tagged"
    wait_rows(db, "SELECT count(*) FROM event_journal WHERE replay_source = 'tagged'", 2,
              sinks=[s])


def _wait_lock_waiter(db: str, timeout: float = 30) -> None:
    harness.wait_for(lambda: scalar(db, "SELECT count(*) FROM pg_stat_activity WHERE "
                                        "application_name LIKE 'eventsink%%' AND "
                                        "wait_event_type = 'Lock'") > 0,
                     timeout, what="an eventsink connection waiting on the table lock")


@contextlib.contextmanager
def journal_locked(db: str):
    """event_journal locked ACCESS EXCLUSIVE by another session for the block."""
    lock = harness.connect(db)
    try:
        lock.execute("BEGIN")
        lock.execute("LOCK TABLE event_journal IN ACCESS EXCLUSIVE MODE")
        yield
    finally:
        lock.execute("ROLLBACK")
        lock.close()


def _health(api) -> dict:
    return api.get("/health", timeout=10).json()


def test_health_says_stalled_while_a_journal_write_waits_on_a_lock(kafka, db, topic, sink):
    s = sink(topics=[topic], dsn=db, extra_config="c.health = { stall_after_s = 2 }\n")
    api = api_for(s)
    first = kafka.produce(topic, [(None, make_event(0, tenant="acme"), None, 0)])
    wait_rows(db, JOURNAL_COUNT, 1, sinks=[s])
    assert ok_json(api.get("/ready"))["ready"] is True
    with journal_locked(db):
        positions = kafka.produce(topic, [(None, make_event(i, tenant="acme"), None, i % 4)
                                          for i in range(1, 21)])
        _wait_lock_waiter(db)
        harness.wait_for(lambda: _health(api)["status"] == "stalled", harness.scaled(30),
                         what="/health stalled")
        h = _health(api)
        assert "writer" in [c["component"] for c in h["stalled"]], h
        assert all(c["since"].endswith("Z") for c in h["stalled"]), h
        r = api.get("/ready")
        assert r.status_code == 503, r.text
        assert metric(scrape(s), "eventsink_stalled", component="writer") == 1
    harness.wait_for(lambda: _health(api)["status"] == "ok", harness.scaled(30),
                     what="/health ok again")
    assert api.get("/ready").status_code == 200
    assert metric(scrape(s), "eventsink_stalled", component="writer") == 0
    wait_rows(db, JOURNAL_COUNT, 21, sinks=[s])
    assert_stored_exactly_once(db, topic, first + positions)


def test_sigterm_within_10s_with_the_journal_locked(kafka, db, topic, sink):
    """The service's own bounds end the wait (statement_timeout, a cancelled write), not
    the last-resort guard that exits 9 s after SIGTERM."""
    s = sink(topics=[topic], dsn=db, allow_errors=[r"PostgreSQL", r"commit"])
    first = kafka.produce(topic, [(None, make_event(0, tenant="acme"), None, 0)])
    wait_rows(db, JOURNAL_COUNT, 1, sinks=[s])
    with journal_locked(db):
        positions = kafka.produce(topic, [(None, make_event(i, tenant="acme"), None, i % 4)
                                          for i in range(1, 41)])
        _wait_lock_waiter(db)
        t0 = time.monotonic()
        rc = s.terminate(timeout=20)
        took = time.monotonic() - t0
        assert took < 10.5, f"exited {took:.1f} s after SIGTERM"
        assert rc == 1, rc  # events in flight were not committed
        assert "stopping took" not in s.log_text(), "the last-resort guard ended the process"
    s.restart()
    wait_rows(db, JOURNAL_COUNT, 41, sinks=[s])
    assert_stored_exactly_once(db, topic, first + positions)


def test_sigterm_within_10s_with_a_hook_that_does_not_come_back(kafka, db, topic, sink,
                                                                tmp_path):
    # a loop of C calls that the sandbox would stop only after 10 minutes (max_call_ms) or
    # 10^9 instructions (hours of string.rep)
    pfile = write_policy(tmp_path / "policies" / "slow.lua",
                         "return {describe = function(ev)\n"
                         "  if ev.payload.slow then while true do local s = string.rep('x', 100000) end end\n"
                         "  return ev.payload.tenant_id, ev.payload.event_type\n"
                         "end}\n")
    s = sink(topics=[topic], dsn=db, policies=[str(pfile)],
             extra_config="c.sandbox = { max_instructions = 1000000000, max_call_ms = 600000 }\n"
                          "c.health = { stall_after_s = 2 }\n",
             allow_errors=[r"stopping took \d+ ms"])
    api = api_for(s)
    slow = make_event(0, tenant="acme")
    slow["slow"] = True
    positions = kafka.produce(topic, [(None, slow, None, 0)]
                              + [(None, make_event(i, tenant="acme"), None, i % 4)
                                 for i in range(1, 11)])
    harness.wait_for(lambda: "policy" in [c["component"] for c in _health(api)["stalled"]],
                     harness.scaled(30), what="/health naming the policy as stalled")
    t0 = time.monotonic()
    rc = s.terminate(timeout=20)
    took = time.monotonic() - t0
    assert took < 10.5, f"exited {took:.1f} s after SIGTERM"
    assert rc == 1, rc  # the batch in flight was not committed
    # restarted with a policy that lets the event through: nothing was lost
    write_policy(pfile, "return {}\n")
    s.restart()
    wait_rows(db, JOURNAL_COUNT, 11, sinks=[s])
    assert_stored_exactly_once(db, topic, positions)


def test_a_deadlock_is_written_again_not_taken_for_postgresql_down(kafka, db, topic, sink):
    """A write that PostgreSQL aborts as a deadlock (40P01) is written again at once: the
    batch lands, and PostgreSQL is not reported down nor consumption paused."""
    s = sink(topics=[topic], dsn=db, allow_errors=[r"deadlock"])
    first = kafka.produce(topic, [(None, make_event(0, tenant="acme"), None, 0)])
    wait_rows(db, JOURNAL_COUNT, 1, sinks=[s])
    other = harness.connect(db)
    try:
        other.execute("BEGIN")
        other.execute("LOCK TABLE dead_letter_queue IN ACCESS EXCLUSIVE MODE")
        # a replay another tool made: its INSERT takes event_journal, then waits for the
        # dead_letter_queue (where a second copy of a job's replay would go)
        ev = dict(make_event(1, tenant="acme"), _replay_source="crm-import",
                  _replayed_from_event_id=1)
        positions = kafka.produce(topic, [(None, ev, None, 0)])
        harness.wait_for(lambda: scalar(db, "SELECT count(*) FROM pg_stat_activity WHERE "
                                            "application_name = 'eventsink' AND "
                                            "wait_event_type = 'Lock'") > 0,
                         harness.scaled(30), what="the journal write waiting on our lock")
        # now we wait for the journal the writer holds: a deadlock, PostgreSQL aborts one
        try:
            other.execute("LOCK TABLE event_journal IN ACCESS EXCLUSIVE MODE")
            aborted_us = False
        except Exception as e:  # noqa: BLE001 - psycopg.errors.DeadlockDetected
            assert "deadlock" in str(e), e
            aborted_us = True
    finally:
        other.rollback()
        other.close()
    wait_rows(db, JOURNAL_COUNT, 2, sinks=[s])
    if not aborted_us:  # the writer was the one aborted
        s.wait_log(r"met another transaction \([^)]*deadlock detected", timeout=30)
        assert metric(scrape(s), "eventsink_write_conflicts_total") >= 1
    assert "PostgreSQL unavailable" not in s.log_text(), "a deadlock taken for an outage"
    assert metric(scrape(s), "eventsink_postgres_up") == 1
    assert_stored_exactly_once(db, topic, first + positions)


def test_health_names_postgresql_not_kafka_when_only_postgresql_is_down(kafka, pg, db, topic,
                                                                         sink):
    """PostgreSQL down at start-up (the consumer waits for the schema): /health says
    postgres down and kafka up, since Kafka answers."""
    pg.stop("fast")
    try:
        s = sink(topics=[topic], dsn=db, wait_started=False, allow_errors=[r"PostgreSQL"])
        api = api_for(s)
        s.wait_log(r"PostgreSQL not ready", timeout=30)

        def both_known():
            try:
                h = _health(api)
            except Exception:  # noqa: BLE001 - the API is still starting
                return False
            return h["postgres"] == "down" and h["kafka"] == "up"
        harness.wait_for(both_known, harness.scaled(30), what="/health: postgres down, kafka up")
        assert metric(scrape(s), "eventsink_kafka_up") == 1
    finally:
        pg.start()
    s.wait_log(r"eventsink started", timeout=60)
    harness.wait_for(lambda: _health(api)["postgres"] == "up", harness.scaled(30),
                     what="/health: postgres up")


@contextlib.contextmanager
def postgres_frozen(pg):
    """Every PostgreSQL process stopped (SIGSTOP), as in a VM pause (PgServer.freeze)."""
    pg.freeze()
    try:
        yield
    finally:
        pg.thaw()


def test_sigterm_within_10s_with_postgresql_frozen(kafka, pg, db, topic, sink):
    """PostgreSQL frozen while a batch is being written: nothing answers, not even a cancel
    request (the kernel accepts its connection, the server never reads it), and TCP
    timeouts do not fire (the kernel acknowledges everything). The shutdown guard ends the
    process 9 s after SIGTERM with code 1; nothing was committed, so nothing is lost: the
    records are delivered again after the restart and stored once."""
    s = sink(topics=[topic], dsn=db, allow_errors=[r"PostgreSQL", r"commit", r"cancel"])
    first = kafka.produce(topic, [(None, make_event(0, tenant="acme"), None, 0)])
    wait_rows(db, JOURNAL_COUNT, 1, sinks=[s])
    with postgres_frozen(pg):
        positions = kafka.produce(topic, [(None, make_event(i, tenant="acme"), None, i % 4)
                                          for i in range(1, 41)])
        time.sleep(2)  # the batch reaches the frozen server
        t0 = time.monotonic()
        rc = s.terminate(timeout=20)
        took = time.monotonic() - t0
        assert took < 10.5, f"exited {took:.1f} s after SIGTERM"
        assert rc == 1, rc  # events in flight were not committed
    s.restart()
    wait_rows(db, JOURNAL_COUNT, 41, sinks=[s])
    assert_stored_exactly_once(db, topic, first + positions)
