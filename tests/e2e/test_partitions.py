"""End-to-end tests of networks that drop packets (issue 16, docs/GUARANTEES.md section 17).

The service runs in a network namespace of the test's own (tests/e2e/netns.py), reaching a
PostgreSQL server and a Kafka broker of the module's own over veth links; the test cuts a
link: every packet on it is dropped, nothing is refused, TCP keeps retransmitting and new
connections wait for their timeout. The test itself reaches both servers throughout (their
addresses are local to the host) and produces all along.

What they prove: the service's waits are bounded behind a partition too; /health answers
over its own link and says what is down; when the link is back the service carries on by
itself; a stream produced throughout is stored exactly once."""

from __future__ import annotations

import time

import pytest

import harness
import netns
from apihelpers import (OPS_TOKEN, TOKENS, api_for, ok_json, wait_caught_up, wait_job,
                        wait_job_progress)
from harness import KafkaBroker, PgServer, SinkFactory, wait_rows
from test_faults import PG_CALL_BOUND_S, STORED, _health, _stream_after, _stream_stored_once


@pytest.fixture(scope="module")
def net():
    """(namespace, PostgreSQL server, Kafka broker): the servers listen on the host ends of
    the namespace's `pg` and `kafka` links, and on loopback for the test."""
    harness.session_lock()
    ns = netns.Namespace(("pg", "kafka", "api"))
    pg_dir, kafka_dir = harness.TEST_ROOT / "pg-net", harness.TEST_ROOT / "kafka-net"
    PgServer.clean_stale(pg_dir)
    KafkaBroker.clean_stale(kafka_dir)
    server = PgServer(pg_dir, also_listen=[ns.host_addr("pg")])
    server.start()
    server.trust(ns.host_addr("pg").rsplit(".", 1)[0] + ".0/30")
    broker = KafkaBroker(kafka_dir, host=ns.host_addr("kafka"))
    broker.start()
    yield ns, server, broker
    broker.stop()
    server.stop("immediate")
    ns.remove()


@pytest.fixture
def net_sink(net, tmp_path, request):
    """sink(topic, dsn, **kw): a service inside the namespace, its API on the `api` link
    (not loopback, so with tokens)."""
    ns, _, broker = net
    factory = SinkFactory(tmp_path, broker, request.node.name)

    def start(topic: str, dsn: str, overrides: dict | None = None, **kw) -> harness.SinkProcess:
        api = ns.ns_addr("api")
        overrides = harness.deep_merge(
            {"http": {"listen": f"{api}:{harness.free_port()}", "tokens": TOKENS},
             "metrics": {"listen": f"{api}:{harness.free_port()}"}}, overrides or {})
        return factory(topics=[topic], dsn=dsn.replace(f"host={harness.LOOPBACK}",
                                                       f"host={ns.host_addr('pg')}"),
                       overrides=overrides, prefix=ns.exec_prefix(), **kw)

    start.group_id = factory.group_id
    yield start
    problems = factory.teardown()
    if problems:
        pytest.fail("eventsink logs after the test:\n\n" + "\n\n".join(problems), pytrace=False)


def test_postgresql_behind_a_partition_that_drops_packets(net, net_sink):
    """The link to PostgreSQL drops every packet while batches are being written: the write
    in flight gets no answer and no error, and the watchdog's bound cuts it; reconnecting
    waits for connect_timeout, again and again; /health says PostgreSQL is down. Once the
    link is back the held batch is written and the stream catches up."""
    ns, server, broker = net
    db = server.new_database("partition_pg")
    topic = broker.create_topic(partitions=4)
    s = net_sink(topic, db, extra_config="c.health = { stall_after_s = 2 }\n",
                 allow_errors=[r"PostgreSQL", r"connection", r"server", r"timeout"])
    api = api_for(s, OPS_TOKEN)
    produced, stream = _stream_after(broker, db, topic, s, 500, seed=101)

    ns.cut("pg")
    try:
        t0 = time.monotonic()
        harness.wait_for(lambda: _health(api)["postgres"] == "down",
                         PG_CALL_BOUND_S + harness.scaled(30),
                         what="/health: postgres down behind the partition")
        down_after = time.monotonic() - t0
        # cut for a while longer: nothing is lost while the batch is held
        end = time.monotonic() + 15
        while time.monotonic() < end:
            assert s.alive() and _health(api)["postgres"] == "down"
            time.sleep(2)
    finally:
        ns.heal("pg")
    assert down_after <= PG_CALL_BOUND_S + harness.scaled(20), down_after
    _stream_stored_once(stream, produced, db, topic, s)
    harness.wait_for(lambda: _health(api)["status"] == "ok" and _health(api)["postgres"] == "up",
                     harness.scaled(120), what="/health ok again")
    assert s.alive()


def test_kafka_behind_a_partition_that_drops_packets(net, net_sink):
    """The link to the broker drops every packet for 40 s, past the group's session timeout
    (6 s here) and librdkafka's request timeouts, while the test goes on producing: the
    broker ends the service's membership, the API answers throughout, and once the link is
    back the service rejoins and catches up; nothing is lost or stored twice."""
    ns, server, broker = net
    db = server.new_database("partition_kafka")
    topic = broker.create_topic(partitions=4)
    s = net_sink(topic, db, allow_errors=[r"kafka", r"Kafka", r"broker", r"commit",
                                          r"timed out", r"Timed out", r"transport"])
    api = api_for(s, OPS_TOKEN)
    produced, stream = _stream_after(broker, db, topic, s, 1000, seed=103)

    ns.cut("kafka")
    try:
        end = time.monotonic() + 40
        while time.monotonic() < end:
            h = _health(api)  # the API answers over its own link
            assert h["status"] in ("ok", "stalled"), h
            assert s.alive()
            time.sleep(4)
    finally:
        ns.heal("kafka")
    produced = _stream_stored_once(stream, produced, db, topic, s)
    assert len(produced) > 1000 + 40 * 100, "the stream went on while the link was cut"
    harness.wait_for(lambda: _health(api)["kafka"] == "up", harness.scaled(60),
                     what="/health: kafka up")
    assert s.alive()


def test_replays_behind_a_partition_count_what_kafka_wrote(net, net_sink):
    """A replay job produces while the link to the broker drops packets, past the
    producer's message.timeout.ms (3 s here): librdkafka reports the produces as timed
    out, and some as never persisted, yet requests already handed to the kernel reach the
    broker once the link is back, and are written (librdkafka issue #1476). An item counted
    succeeded has exactly one journal row, one counted failed has none, and the job
    settles every item by itself."""
    ns, server, broker = net
    db = server.new_database("partition_replay")
    topic = broker.create_topic(partitions=4)
    s = net_sink(topic, db, overrides={"kafka": {"properties": {
                     "message.timeout.ms": "3000"}}},
                 allow_errors=[r"kafka", r"Kafka", r"broker", r"commit", r"timed out",
                               r"Timed out", r"transport", r"replay"])
    api = api_for(s, OPS_TOKEN)
    total = 600
    broker.produce(topic, [(None, e) for e in harness.event_stream(total, seed=105)])
    wait_rows(db, STORED, total, timeout=120, sinks=[s])
    ids = [r[0] for r in harness.query(db, "SELECT id FROM event_journal ORDER BY id")]
    job_id = ok_json(api.post("/replay/batch", json={"ids": ids, "rate_per_s": 200}),
                     202)["job_id"]
    wait_job_progress(api, job_id, 50, timeout=60, sinks=[s])
    ns.cut("kafka")
    try:
        time.sleep(8)  # past message.timeout.ms, with produce requests on the wire
    finally:
        ns.heal("kafka")
    job = wait_job(api, job_id, timeout=300, sinks=[s])
    assert job["succeeded"] + job["failed"] == total, job
    wait_caught_up(broker, net_sink.group_id, [topic], timeout=300, sinks=[s])
    items = harness.query_dicts(
        db, "SELECT i.seq, i.status, i.event_id, i.error, count(j.id) AS rows"
            " FROM replay_job_items i LEFT JOIN event_journal j ON j.replay_job_id = i.job_id"
            " AND j.replayed_from_event_id = i.event_id WHERE i.job_id = %s"
            " GROUP BY 1, 2, 3, 4",
        (job_id,))
    wrong = [i for i in items if (i["status"], i["rows"]) not in (("sent", 1), ("failed", 0))]
    assert not wrong, f"{len(wrong)} items disagree with the journal, e.g. {wrong[:3]}"
    assert sum(i["status"] == "sent" for i in items) == job["succeeded"]
    assert s.alive()
