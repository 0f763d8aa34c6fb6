"""End-to-end tests on a three-node Kafka cluster (issue 16, docs/GUARANTEES.md section
17): KRaft, replication factor 3, min.insync.replicas 2 (tests/e2e/kafka_cluster.py). The
node that leads most of the busy topic's partitions is killed with SIGKILL mid-stream, and
during a replay job, then started again.

What they prove: leadership moves and consumption goes on while the node is down; the
consumer group's coordinator may move with it and the group rejoins without loss; the
service's replays, produced with acks=all and idempotence, each land once in Kafka and
once in the journal; nothing is lost or stored twice."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest

import harness
from apihelpers import api_for, end_offsets, ok_json, wait_job, wait_job_progress
from harness import SinkFactory, query, scalar, wait_at_least, wait_rows
from kafka_cluster import KafkaCluster
from test_faults import STORED, _stream_after, _stream_stored_once

PARTITIONS = 6
KAFKA_ERRORS = [r"kafka", r"Kafka", r"broker", r"commit", r"timed out", r"Timed out",
                r"transport", r"leader", r"Connection refused", r"coordinator"]


@pytest.fixture(scope="module")
def cluster():
    harness.session_lock()
    directory = harness.TEST_ROOT / "kafka-cluster"
    KafkaCluster.clean_stale(directory)
    c = KafkaCluster(directory)
    c.start()
    yield c
    c.stop()


@pytest.fixture
def cluster_sink(cluster, tmp_path, request):
    factory = SinkFactory(tmp_path, cluster, request.node.name)
    yield factory
    problems = factory.teardown()
    if problems:
        pytest.fail("eventsink logs after the test:\n\n" + "\n\n".join(problems), pytrace=False)


def _node_down(cluster: KafkaCluster, topic: str) -> int:
    """Kills the node leading most of the topic's partitions; returns its id once the
    others lead every partition."""
    leader = cluster.busiest_leader(topic)
    cluster.kill_node(leader)

    def moved():
        md = cluster.admin().list_topics(topic=topic, timeout=10)
        return all(p.leader not in (-1, leader) for p in md.topics[topic].partitions.values())
    harness.wait_for(moved, harness.scaled(60), what="leadership to move off the killed node")
    return leader


def test_leader_of_busy_partitions_killed_mid_stream(cluster, cluster_sink, db):
    topic = cluster.create_topic(partitions=PARTITIONS)
    s = cluster_sink(topics=[topic], dsn=db, allow_errors=KAFKA_ERRORS)
    produced, stream = _stream_after(cluster, db, topic, s, 1000, seed=121)

    leader = _node_down(cluster, topic)
    # consumption goes on with the node down
    stored = scalar(db, STORED)
    wait_at_least(db, STORED, stored + 1000, timeout=120, sinks=[s])
    cluster.start_node(leader)
    harness.wait_for(lambda: cluster.in_sync(topic), harness.scaled(120),
                     what="every replica back in sync")
    _stream_stored_once(stream, produced, db, topic, s)
    assert s.alive()


def test_leader_killed_during_a_replay_job_each_replay_lands_once(cluster, cluster_sink, db):
    topic = cluster.create_topic(partitions=PARTITIONS)
    s = cluster_sink(topics=[topic], dsn=db, allow_errors=KAFKA_ERRORS)
    api = api_for(s)
    total = 1500
    produced = cluster.produce(topic, [(None, e) for e in harness.event_stream(total, seed=123)])
    wait_rows(db, STORED, total, timeout=120, sinks=[s])
    body = ok_json(api.post("/replay/range", json={
        "start": "2000-01-01T00:00:00Z", "end": "2100-01-01T00:00:00Z", "topic": topic,
        "confirm": True, "rate_per_s": 150, "reason": "leader kill"}), 202)
    job_id = body["job_id"]
    assert body["matched"] == total
    wait_job_progress(api, job_id, 200, timeout=120, sinks=[s])

    leader = _node_down(cluster, topic)
    time.sleep(3)
    cluster.start_node(leader)
    job = wait_job(api, job_id, timeout=300, sinks=[s])
    assert (job["status"], job["succeeded"], job["failed"]) == ("done", total, 0), job

    # once in the journal, each replay of its own original
    wait_rows(db, "SELECT count(*) FROM event_journal WHERE replay_count > 0", total,
              timeout=300, sinks=[s])
    dupes = query(db, "SELECT replayed_from_event_id, count(*) FROM event_journal WHERE "
                      "replay_count > 0 GROUP BY 1 HAVING count(*) > 1 LIMIT 5")
    assert not dupes, f"replayed into the journal more than once: {dupes}"
    # and once in Kafka: the whole topic read back
    in_topic = sum(end_offsets(cluster, topic, PARTITIONS).values())
    records = cluster.consume(topic, in_topic, timeout=120)
    assert len(records) == in_topic == 2 * total, (len(records), in_topic)
    sources = Counter(json.loads(m.value()).get("_replayed_from_event_id") for m in records)
    sources.pop(None)  # the originals
    assert len(sources) == total and set(sources.values()) == {1}, sources.most_common(3)
    assert len(produced) == total and s.alive()
