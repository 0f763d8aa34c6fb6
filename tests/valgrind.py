#!/usr/bin/env python3
"""valgrind memcheck of a short end-to-end scenario (`make valgrind`).

Runs the non-sanitizer build (EVENTSINK_BIN, default build/eventsink) under

  valgrind --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99
           --suppressions=tests/valgrind.supp

against a private PostgreSQL and a real Kafka broker (under .test/valgrind): start, consume
200 events of which 20 are poison (invalid JSON, invalid UTF-8, \\u0000), one replay of an
event and one batch replay through the API, one policy reload (POST /admin/reload), then
SIGTERM (plus a DLQ retry, a SIGHUP and a metrics scrape). It fails when the service does not exit 0 -- valgrind turns any invalid read or
write, use of uninitialised memory, bad free or definite leak into exit code 99 -- and
prints valgrind's error and leak summary either way.

tests/valgrind.supp may only hold suppressions for leaks inside third-party libraries
(librdkafka, libmicrohttpd, OpenSSL, Lua), never for eventsink's own code.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "e2e"))

import harness  # noqa: E402
import requests  # noqa: E402
from apihelpers import api_for, metrics_url, ok_json, wait_job, wait_journal_at  # noqa: E402
from harness import (KafkaBroker, PgServer, SinkFactory, SinkProcess, event_records,  # noqa: E402
                     event_stream, scalar, wait_rows)

REPO = harness.REPO
SUPP = REPO / "tests" / "valgrind.supp"
POISON = [b'{"tenant_id": "acme", "event_type": "lead.created", "data": {',
          b"not json at all",
          b'{"tenant_id": "acme", "event_type": "lead.created", "name": "caf\xe9"}',
          b'{"tenant_id": "acme", "event_type": "lead.created", "note": "a\\u0000b"}']


def main() -> int:
    binary = Path(os.path.abspath(os.environ.get("EVENTSINK_BIN",
                                                 str(REPO / "build" / "eventsink"))))
    if b"__asan_init" in binary.read_bytes():
        print(f"valgrind: {binary} is a sanitizer build; use build/eventsink", file=sys.stderr)
        return 2
    root = Path(os.environ.get("VALGRIND_ROOT", str(REPO / ".test" / "valgrind")))
    root.mkdir(parents=True, exist_ok=True)
    lock = open(root / "valgrind.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    work = root / "run"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    vg_log = work / "valgrind.log"
    wrapper = work / "eventsink-under-valgrind"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"exec valgrind --tool=memcheck --leak-check=full --errors-for-leak-kinds=definite "
        f"--show-leak-kinds=definite,possible --error-exitcode=99 --num-callers=40 "
        f"--suppressions={SUPP} --gen-suppressions=all --log-file={vg_log} "
        f"{binary} \"$@\"\n")
    wrapper.chmod(0o755)
    os.environ["EVENTSINK_BIN"] = str(wrapper)  # harness.SinkProcess runs it
    scale = float(os.environ.get("E2E_TIMEOUT_SCALE", "1"))
    harness.TIMEOUT_SCALE = max(scale, 3.0)  # everything is ~20x slower under memcheck

    t0 = time.monotonic()
    PgServer.clean_stale(root / "pg")
    KafkaBroker.clean_stale(root / "kafka")
    pg = PgServer(root / "pg")
    kafka = KafkaBroker(root / "kafka")
    rc = None
    try:
        pg.start()
        kafka.start()
        dsn = pg.new_database("valgrind")
        topic = kafka.create_topic(partitions=2)
        factory = SinkFactory(work, kafka, "valgrind")
        conf = factory.write_config(topics=[topic], dsn=dsn,
                                    batch={"max_events": 100, "max_wait_ms": 50})
        s = SinkProcess(conf.parent, conf, "valgrind", allow_errors=True)
        print(f"valgrind: starting {binary} under memcheck (log {vg_log})", flush=True)
        s.start(timeout=240)
        api = api_for(s)

        records = event_records(event_stream(180, seed=7))
        for i, value in enumerate(POISON * 5):
            records.insert(7 + i * 9, (f"poison-{i}", value, [("n", str(i).encode())], None))
        kafka.produce(topic, records)
        wait_rows(dsn, "SELECT count(*) FROM event_journal", 180, timeout=300, sinks=[s])
        wait_rows(dsn, "SELECT count(*) FROM dead_letter_queue", 20, timeout=300, sinks=[s])
        print(f"valgrind: 180 events journaled, 20 dead-lettered", flush=True)

        first = scalar(dsn, "SELECT min(id) FROM event_journal")
        j = ok_json(api.post(f"/replay/{first}", json={"reason": "valgrind"}, timeout=120), 202)
        wait_journal_at(dsn, j["kafka"]["topic"], j["kafka"]["partition"], j["kafka"]["offset"],
                        sinks=[s], timeout=300)
        ids = [r[0] for r in harness.query(dsn, "SELECT id FROM event_journal WHERE "
                                                "replay_count = 0 ORDER BY id LIMIT 3 OFFSET 1")]
        b = ok_json(api.post("/replay/batch", json={"ids": ids, "reason": "valgrind"},
                             timeout=120), 202)
        assert wait_job(api, b["job_id"], timeout=300, sinks=[s])["succeeded"] == 3
        wait_rows(dsn, "SELECT count(*) FROM event_journal WHERE replay_count > 0", 4,
                  timeout=300, sinks=[s])
        r = api.post("/admin/reload", timeout=120)
        assert r.status_code == 200, r.text
        print(f"valgrind: replays and reload done: {json.dumps(r.json())}", flush=True)
        for path in ("/health", "/events/latest?limit=5", f"/events/{first}/lineage", "/dlq",
                     "/replay/jobs", "/admin/policies", "/"):
            assert api.get(path, timeout=120).status_code == 200, path
        # and, cheap extras: a DLQ retry that fails again, a SIGHUP, a metrics scrape
        dlq = scalar(dsn, "SELECT min(id) FROM dead_letter_queue")
        ok_json(api.post(f"/dlq/{dlq}/retry", timeout=120), 202)
        harness.wait_for(lambda: scalar(dsn, "SELECT attempts FROM dead_letter_queue WHERE id = %s",
                                        (dlq,)) == 1, 300, what="the DLQ retry to come back")
        s.signal(signal.SIGHUP)
        s.wait_log(r"policies reloaded: version 3", timeout=120)
        m = requests.get(metrics_url(s), timeout=120)
        assert m.status_code == 200 and "eventsink_events_consumed_total" in m.text

        s.signal(signal.SIGTERM)
        try:
            rc = s.proc.wait(timeout=300)
        except Exception:  # noqa: BLE001
            s.kill9()
            raise
        s._finish()
        print(f"valgrind: the service exited with {rc} after SIGTERM", flush=True)
    except Exception as e:  # noqa: BLE001
        print(f"valgrind: the scenario failed: {type(e).__name__}: {e}", flush=True)
        rc = rc if rc not in (None, 0) else 1
    finally:
        harness.cleanup_all()

    text = vg_log.read_text(errors="replace") if vg_log.exists() else ""
    main_pid = None
    # memcheck writes one block per process; the service is the one whose command is ours
    for m in re.finditer(r"==(\d+)== Command: (.*)", text):
        if str(binary) in m.group(2):
            main_pid = m.group(1)
    lines = [l for l in text.splitlines() if main_pid and l.startswith(f"=={main_pid}==")]
    summary = [l for l in lines if re.search(r"ERROR SUMMARY|definitely lost|indirectly lost|"
                                             r"possibly lost|still reachable|suppressed:", l)]
    print("\n".join(summary))
    errors = [l for l in lines if re.search(r"Invalid (read|write|free)|uninitialised|"
                                            r"Mismatched free|are definitely lost", l)]
    if errors:
        print("valgrind findings (see the log for the stacks):\n" + "\n".join(errors[:20]))
    print(f"valgrind: {time.monotonic() - t0:.0f} s, log {vg_log}")
    if rc != 0:
        print(f"valgrind: FAILED (exit code {rc})")
        return 1
    print("valgrind: passed (no invalid access, no definite leak)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
