"""Every shell example of the operator documentation runs, as written, against a live
service: README.md, docs/OPERATOR_QUICKREF.md, docs/REPLAY_GUIDE.md, docs/POLICY_GUIDE.md.

The documents address the service of `make demo` (API on 127.0.0.1:9106, metrics on
127.0.0.1:9105, PostgreSQL on port 55432, database eventsink, topic
apexflow.leads.created). The test runs a service on ports of its own, fed with the demo's
sample events, and rewrites only those addresses in the text before running each
document's ```sh blocks, in order, in one bash with `set -euo pipefail`."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

import harness

REPO = Path(__file__).resolve().parents[2]
DEMO_TOPIC = "apexflow.leads.created"
SKIP_BLOCK = re.compile(r"\bmake (demo|test)\b")


def sh_blocks(doc: Path) -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", doc.read_text(), flags=re.S)
    return [b for b in blocks if not SKIP_BLOCK.search(b)]


def demo_records(round_no: int) -> list[tuple]:
    out = subprocess.run([str(REPO / "demo" / "events.sh"), str(round_no)], check=True,
                         capture_output=True, text=True).stdout
    recs = []
    for line in out.splitlines():
        key, _, value = line.partition("\t")
        recs.append((key, value.encode(), None, None))
    return recs


@pytest.fixture
def demo_sink(pg, kafka, sink):
    """A service on the demo's topic with ten rounds of demo events in, and a feeder that
    keeps producing a round a second while the documents run."""
    try:
        kafka.create_topic(DEMO_TOPIC, partitions=4)
    except Exception:
        pass  # created by an earlier test of this session
    dsn = pg.new_database("docs")
    s = sink(topics=[DEMO_TOPIC], dsn=dsn,
             overrides={"webhooks": {"secret": "demo-webhook-secret"}})
    for r in range(1, 11):
        kafka.produce(DEMO_TOPIC, demo_records(r))
    harness.wait_at_least(dsn, "SELECT count(*) FROM event_journal", 40, timeout=120)
    harness.wait_at_least(dsn, "SELECT count(*) FROM dead_letter_queue", 2, timeout=60)
    stop = threading.Event()

    def feed():
        r = 11
        while not stop.is_set():
            kafka.produce(DEMO_TOPIC, demo_records(r))
            r += 1
            stop.wait(1.0)

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    conf = s.config_path.read_text()
    http_port = re.search(r'listen = "127\.0\.0\.1:(\d+)"', conf).group(1)
    ports = re.findall(r'listen = "127\.0\.0\.1:(\d+)"', conf)
    yield {"dsn": dsn, "http": ports[0], "metrics": ports[1], "sink": s,
           "db": dsn.split("dbname=")[1].split()[0], "pg_port": str(pg.port)}
    stop.set()
    t.join(timeout=10)
    assert http_port


def localize(text: str, env: dict) -> str:
    text = text.replace("127.0.0.1:9106", f"127.0.0.1:{env['http']}")
    text = text.replace("127.0.0.1:9105", f"127.0.0.1:{env['metrics']}")
    text = text.replace("-p 55432", f"-p {env['pg_port']}").replace("port=55432", f"port={env['pg_port']}")
    text = text.replace("-d eventsink", f"-d {env['db']}").replace("dbname=eventsink", f"dbname={env['db']}")
    return text


def run_doc(name: str, env: dict) -> subprocess.CompletedProcess:
    blocks = sh_blocks(REPO / name)
    assert blocks, f"{name} has no sh examples"
    script = "set -euo pipefail\n" + "\n".join(localize(b, env) for b in blocks)
    return subprocess.run(["bash", "-c", script], cwd=REPO, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.parametrize("doc", ["README.md", "docs/OPERATOR_QUICKREF.md",
                                 "docs/POLICY_GUIDE.md"])
def test_doc_examples_run(demo_sink, doc):
    res = run_doc(doc, demo_sink)
    assert res.returncode == 0, (f"{doc}: an example failed (exit {res.returncode})\n"
                                 f"--- stdout\n{res.stdout[-4000:]}\n--- stderr\n{res.stderr[-4000:]}")


def test_replay_guide_recovers_the_rejected_events(demo_sink):
    """The outage walk-through does what it says: the db_reject entries it creates end up
    resolved, pointing at journal rows that point back."""
    res = run_doc("docs/REPLAY_GUIDE.md", demo_sink)
    assert res.returncode == 0, res.stderr[-4000:]
    dsn = demo_sink["dsn"]
    rejected = harness.scalar(dsn, "SELECT count(*) FROM dead_letter_queue WHERE reason = 'db_reject'")
    assert rejected > 0, "the constraint of step 1 made no event fail"
    harness.wait_rows(dsn, "SELECT count(*) FROM dead_letter_queue WHERE reason = 'db_reject'"
                      " AND status = 'resolved'", rejected, timeout=120)
    bad = harness.scalar(dsn, "SELECT count(*) FROM dead_letter_queue d WHERE reason = 'db_reject'"
                              " AND NOT EXISTS (SELECT 1 FROM event_journal j WHERE j.id ="
                              " d.resolved_event_id AND j.replayed_from_dlq_id = d.id)")
    assert bad == 0
    assert harness.scalar(dsn, "SELECT count(*) FROM replay_jobs WHERE kind = 'range'") >= 1
