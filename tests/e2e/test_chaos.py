"""The bounded chaos run (issue 7, part 1), as part of `make test`.

Runs tests/chaos/chaos.py for CHAOS_TEST_SECONDS (default 90) against the binary under
test (EVENTSINK_BIN: the sanitizer build in `make test`), with at least one fault of each
kind: kill -9, SIGTERM, PostgreSQL stopped fast and immediate, the Kafka cluster restarted,
SIGHUP with a good and a broken policy, a second instance joining and leaving the group,
replay jobs killed mid-way, offsets rewound, PostgreSQL and the brokers frozen,
PostgreSQL's disk full, the links to PostgreSQL and Kafka dropping packets, the leading
Kafka node killed, a failover to the synchronous standby. It has its own PostgreSQL pair
and three-node Kafka cluster (under .test/chaos) and network namespace, so it needs none
of the session's fixtures. The full run is `make chaos`
(600 s); a failing run prints its seed: repeat it with CHAOS_SEED=S.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import harness

CHAOS = harness.REPO / "tests" / "chaos" / "chaos.py"


def test_bounded_chaos_run_loses_and_duplicates_nothing():
    seconds = int(os.environ.get("CHAOS_TEST_SECONDS", "90"))
    env = dict(os.environ)
    env["CHAOS_SECONDS"] = str(seconds)
    env.setdefault("CHAOS_ROOT", str(harness.TEST_ROOT / "chaos"))
    env["EVENTSINK_BIN"] = str(harness.eventsink_bin())
    r = subprocess.run([sys.executable, str(CHAOS)], env=env, capture_output=True, text=True,
                       timeout=harness.scaled(seconds + 900))
    out = r.stdout + r.stderr
    lines = [l for l in r.stdout.splitlines() if l.startswith("chaos: seed ")]
    summary = lines[-1] if lines else "(no summary line)"
    print(summary)
    tail = "\n".join(l for l in out.splitlines() if not l.startswith("%"))[-6000:]
    assert r.returncode == 0, f"chaos run failed ({r.returncode}): {summary}\n{tail}"
    assert re.search(r"lost 0, duplicated 0$", summary), summary
    for kind in ("kill9", "sigterm", "pg_fast", "pg_immediate", "kafka_restart", "sighup_good",
                 "sighup_broken", "second_instance", "replay_kill", "offset_rewind",
                 "pg_freeze", "kafka_freeze", "pg_disk_full", "pg_partition", "kafka_partition",
                 "pg_failover", "kafka_leader_kill"):
        m = re.search(rf"\b{kind} (\d+)", summary)
        assert m and int(m.group(1)) >= 1, f"no {kind} fault in: {summary}"
