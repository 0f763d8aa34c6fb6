"""The request rate that GET /events/latest?limit=100 sustains while the consumer runs
(issue 3). Starts its own PostgreSQL and Kafka broker (under .bench/api, through the e2e
harness), loads API_RATE_EVENTS events, starts eventsink (build/eventsink) and, while it
consumes them, runs `wrk` against the API for API_RATE_SECONDS. Prints wrk's figures,
the consumption rate in the same window, and whether every event was persisted once.

    .venv/bin/python tests/bench/api_rate.py        (make api-rate does the same)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
os.environ.setdefault("E2E_TEST_ROOT", str(REPO / ".bench" / "api"))
os.environ.setdefault("EVENTSINK_BIN", str(REPO / "build" / "eventsink"))
sys.path.insert(0, str(REPO / "tests" / "e2e"))

import harness  # noqa: E402

EVENTS = int(os.environ.get("API_RATE_EVENTS", "300000"))
SECONDS = int(os.environ.get("API_RATE_SECONDS", "10"))
CONNECTIONS = int(os.environ.get("API_RATE_CONNECTIONS", "8"))


def main() -> int:
    root = Path(os.environ["E2E_TEST_ROOT"])
    harness.PgServer.clean_stale(root / "pg")
    harness.KafkaBroker.clean_stale(root / "kafka")
    pg = harness.PgServer(root / "pg")
    kafka = harness.KafkaBroker(root / "kafka")
    pg.start()
    kafka.start()
    work = Path(tempfile.mkdtemp(prefix="api-rate-", dir=root))
    factory = harness.SinkFactory(work, kafka, "api_rate")
    try:
        dsn = pg.new_database("api_rate")
        topic = kafka.create_topic(partitions=12)
        print(f"api-rate: producing {EVENTS:,} events", flush=True)
        batch = 20000
        for start in range(0, EVENTS, batch):
            evs = harness.event_stream(min(batch, EVENTS - start), seed=7, start=start)
            kafka.produce(topic, harness.event_records(evs))
        sink = factory(topics=[topic], dsn=dsn)
        port = re.search(r'listen = "127\.0\.0\.1:(\d+)"', sink.config_path.read_text()).group(1)
        harness.wait_at_least(dsn, "SELECT count(*) FROM event_journal", 1000, timeout=120)
        before = harness.scalar(dsn, "SELECT count(*) FROM event_journal")
        t0 = time.monotonic()
        url = f"http://127.0.0.1:{port}/events/latest?limit=100"
        out = subprocess.run(["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "--latency", url],
                             capture_output=True, text=True, check=True).stdout
        elapsed = time.monotonic() - t0
        after = harness.scalar(dsn, "SELECT count(*) FROM event_journal")
        print(out)
        rps = re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        consumed = (after - before) / elapsed
        harness.wait_rows(dsn, "SELECT count(*) FROM event_journal", EVENTS, timeout=600)
        dup = harness.scalar(dsn, "SELECT count(*) - count(DISTINCT (kafka_partition, kafka_offset))"
                                  " FROM event_journal")
        print(f"api-rate: GET /events/latest?limit=100 at {float(rps):,.0f} requests/s "
              f"({CONNECTIONS} connections, {SECONDS} s, non-2xx: "
              f"{non2xx.group(1) if non2xx else 0}); consumer meanwhile "
              f"{consumed:,.0f} events/s; all {EVENTS:,} events persisted, {dup} duplicates")
        return 0 if dup == 0 and not non2xx else 1
    finally:
        problems = factory.teardown()
        if problems:
            print("\n".join(problems))
        kafka.stop()
        pg.stop("fast")


if __name__ == "__main__":
    sys.exit(main())
