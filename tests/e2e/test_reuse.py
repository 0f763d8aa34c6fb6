"""Reused Kafka offsets are never dropped silently (CONTRACT 9.2), against a real PostgreSQL
and a real Kafka broker: a topic deleted and created again while the service is stopped
(twice), while it runs without seeing the topic gone (the service frozen meanwhile), with
the old topic's committed offsets left on the new one (a commit that raced the deletion),
and a second start of the embedded cluster against a kept database. Every new record lands
(at a new generation of its position), with a warning and eventsink_offset_reuse_total
{topic}; a true redelivery stays a no-op."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

from confluent_kafka import Consumer, Producer, TopicPartition

import harness
from apihelpers import metric, scrape, wait_caught_up
from harness import make_event, query, scalar, wait_rows

JOURNAL_COUNT = "SELECT count(*) FROM event_journal"
REUSE_LOG = r"arrived at a Kafka position that already holds another record"


def _recreate(kafka, topic: str, partitions: int = 2) -> None:
    kafka.admin().delete_topics([topic])[topic].result(timeout=harness.scaled(60))
    harness.wait_for(lambda: topic not in kafka.admin().list_topics(timeout=5).topics,
                     harness.scaled(60), what=f"{topic} deleted")
    for _ in range(60):  # the broker may still be finishing the deletion
        try:
            kafka.create_topic(topic, partitions=partitions)
            return
        except Exception:  # noqa: BLE001 - TOPIC_ALREADY_EXISTS while the deletion settles
            time.sleep(1)
    raise AssertionError(f"{topic} could not be created again")


def _batch(start: int, n: int, partitions: int = 2) -> list[tuple]:
    return [(f"k-{i}", json.dumps(make_event(i, tenant="acme")).encode(), None, i % partitions)
            for i in range(start, start + n)]


def _keys(db: str) -> list[str]:
    return sorted(r[0] for r in query(db, "SELECT event_key FROM event_journal"))


def test_a_recreated_topic_keeps_every_new_record(kafka, db, sink):
    topic = kafka.create_topic(partitions=2)
    s = sink(topics=[topic], dsn=db)
    first = kafka.produce(topic, _batch(0, 10))
    wait_rows(db, JOURNAL_COUNT, 10, sinks=[s])

    # the topic deleted and created again while the service is stopped: the new topic hands
    # out offsets 0.. again, for other records (twice)
    for gen in (1, 2):
        assert s.terminate() == 0
        _recreate(kafka, topic)
        again = kafka.produce(topic, _batch(10 * gen, 10))
        assert set(again) == set(first), (first, again)  # the same positions, other records
        s.restart()
        wait_rows(db, JOURNAL_COUNT, 10 * (gen + 1), sinks=[s], timeout=180)
        s.wait_log(REUSE_LOG, timeout=30)
        assert metric(scrape(s), "eventsink_offset_reuse_total", topic=topic) == 10
    assert _keys(db) == sorted(f"k-{i}" for i in range(30))
    # generations 0, 1, 2 of each position, each record once
    gens = query(db, "SELECT kafka_generation, count(*) FROM event_journal GROUP BY 1 ORDER BY 1")
    assert gens == [(0, 10), (1, 10), (2, 10)], gens

    # a true redelivery stays a no-op: a second group reads the whole topic again
    again = f"{sink.group_id}-again"
    s2 = sink(topics=[topic], dsn=db, group_id=again)
    wait_caught_up(kafka, again, [topic], partitions=2, sinks=[s2])
    assert scalar(db, JOURNAL_COUNT) == 30
    assert (metric(scrape(s2), "eventsink_offset_reuse_total", topic=topic) or 0) == 0
    assert s2.persisted_count() == 0


def _commit(kafka, group_id: str, topic: str, offsets: dict[int, int]) -> None:
    """Commits offsets for a group that has no member running (as a commit that raced the
    topic's deletion leaves them on the new topic)."""
    c = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": group_id,
                  "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()],
                 asynchronous=False)
    finally:
        c.close()


def test_a_recreated_topic_with_the_old_topics_committed_offsets(kafka, db, sink):
    """The revoke flush of the old topic can commit its offsets after the topic was created
    again: the new topic then starts at them. The records before them must still land."""
    topic = kafka.create_topic(partitions=2)
    s = sink(topics=[topic], dsn=db)
    kafka.produce(topic, _batch(0, 10))  # offsets 0..4 of each partition
    wait_rows(db, JOURNAL_COUNT, 10, sinks=[s])
    assert s.terminate() == 0
    _recreate(kafka, topic)
    kafka.produce(topic, _batch(10, 20))  # offsets 0..9 of each partition, other records
    _commit(kafka, sink.group_id, topic, {0: 5, 1: 5})
    s.restart()
    wait_rows(db, JOURNAL_COUNT, 30, sinks=[s], timeout=180)
    s.wait_log(REUSE_LOG, timeout=30)
    s.wait_log(r"reading it again from its beginning", timeout=30)
    assert _keys(db) == sorted(f"k-{i}" for i in range(30))
    gens = query(db, "SELECT kafka_generation, count(*) FROM event_journal GROUP BY 1 ORDER BY 1")
    assert gens == [(0, 20), (1, 10)], gens
    assert metric(scrape(s), "eventsink_partition_rereads_total", topic=topic) == 2
    wait_caught_up(kafka, sink.group_id, [topic], partitions=2, sinks=[s])
    assert scalar(db, JOURNAL_COUNT) == 30


def test_a_topic_recreated_while_the_service_runs_unaware(kafka, db, sink):
    """The topic deleted and created again, longer than before, while the service is frozen
    (SIGSTOP): it comes back with its fetch positions, group membership and metadata as they
    were, and nothing tells it the log was replaced. Its fetches at the old positions read
    the new log from there on; the new records before them must land all the same (the
    position probe finds the last record read before no longer there and the partitions are
    read again from their beginning)."""
    topic = kafka.create_topic(partitions=2)
    # the group session outlives the freeze: a rebalance would check the positions anyway
    s = sink(topics=[topic], dsn=db, overrides={"kafka": {"properties": {
        "session.timeout.ms": "60000", "heartbeat.interval.ms": "3000"}}})
    kafka.produce(topic, _batch(0, 10))  # offsets 0..4 of each partition
    wait_rows(db, JOURNAL_COUNT, 10, sinks=[s])
    wait_caught_up(kafka, sink.group_id, [topic], partitions=2, sinks=[s])
    os.kill(s.pid, signal.SIGSTOP)
    try:
        # the fetches it sent before it froze are answered (fetch.wait.max.ms is 500 ms)
        # before the topic goes: no answer waiting for it says the topic was gone
        time.sleep(2)
        _recreate(kafka, topic)
        kafka.produce(topic, _batch(10, 30))  # offsets 0..14 of each partition
        # its broker connections are cut while it is frozen: no fetch session survives
        # that could tell it, and it fetches the new log by name from the old positions
        subprocess.run(["ss", "-K", "dst", "127.0.0.1", "dport", "=", str(kafka.port)],
                       check=True, capture_output=True)
    finally:
        os.kill(s.pid, signal.SIGCONT)
    wait_rows(db, JOURNAL_COUNT, 40, sinks=[s], timeout=120)
    assert _keys(db) == sorted(f"k-{i}" for i in range(40))
    s.wait_log(r"reading it again from its beginning", timeout=30)
    wait_caught_up(kafka, sink.group_id, [topic], partitions=2, sinks=[s])
    assert scalar(db, JOURNAL_COUNT) == 40
    # across a restart: each partition starts one record back, a redelivery, a no-op
    assert s.terminate() == 0
    s.restart()
    s.wait_log(r"2 partition\(s\) start one record before their committed offset", timeout=60)
    wait_caught_up(kafka, sink.group_id, [topic], partitions=2, sinks=[s])
    assert scalar(db, JOURNAL_COUNT) == 40
    assert s.persisted_count() == 0


def _embedded_config(factory, db: str, name: str):
    return factory.write_config(topics=["apexflow.leads.created"], dsn=db, name=name,
                                extra_config='c.kafka.brokers = "embedded"\n'
                                             'c.kafka.properties = {}\n')


def _bootstrap(s) -> str:
    m = None

    def found():
        nonlocal m
        m = re.search(r"listening at ([0-9.:,]+)", s.log_text())
        return m is not None
    harness.wait_for(found, harness.scaled(30), what="the embedded cluster's address")
    return m.group(1)


def test_a_second_embedded_cluster_against_a_kept_database(db, sink_factory_offline):
    cfg = _embedded_config(sink_factory_offline, db, "embedded")
    s = harness.SinkProcess(cfg.parent, cfg, "embedded")
    for run in range(2):
        if run == 0:
            s.start()
        else:
            s.restart()
        p = Producer({"bootstrap.servers": _bootstrap(s), "linger.ms": 5})
        for key, value, _, _ in _batch(run * 8, 8, partitions=1):
            p.produce("apexflow.leads.created", key=key, value=value, partition=0)
        assert p.flush(harness.scaled(30)) == 0
        wait_rows(db, JOURNAL_COUNT, 8 * (run + 1), sinks=[s], timeout=120)
        assert s.terminate() == 0
    assert _keys(db) == sorted(f"k-{i}" for i in range(16))
    assert re.search(REUSE_LOG, s.log_text(2)), "the second run did not warn"
