"""Checks of the harness itself (no eventsink involved): PostgreSQL can be stopped and
started again with its data, and records make the round trip through the Kafka broker."""

import json

import harness


def test_postgres_database_survives_stop_and_start(pg):
    dsn = pg.new_database("harness")
    harness.query(dsn, "CREATE TABLE t (x int)")
    harness.query(dsn, "INSERT INTO t SELECT generate_series(1, 5)")
    pg.stop("fast")
    assert not harness.port_open(pg.port)
    pg.start()
    assert harness.wait_rows(dsn, "SELECT count(*) FROM t", 5, timeout=30) == 5
    other = pg.new_database("harness")
    assert other != dsn
    assert harness.count_or_zero(other, "SELECT count(*) FROM t") == 0


def test_kafka_round_trip(kafka):
    topic = kafka.create_topic(partitions=4)
    events = list(harness.event_stream(20, seed=3))
    recs = harness.event_records(events)
    recs.append(("k", b"\xff raw", [("h", b"v")], 2))
    positions = kafka.produce(topic, recs)
    assert len(positions) == 21
    assert positions[-1][0] == 2
    assert {p for p, _ in positions} <= {0, 1, 2, 3}
    got = kafka.consume(topic, 21, timeout=60)
    assert len(got) == 21
    by_pos = {(m.partition(), m.offset()): m for m in got}
    for (part, off), rec in zip(positions, recs):
        m = by_pos[(part, off)]
        assert m.value() == rec[1]
        assert m.key() == (rec[0].encode() if isinstance(rec[0], str) else rec[0])
    sizes = [len(json.dumps(e)) for e in events]
    assert 200 < sum(sizes) / len(sizes) < 450


def test_lua_rendering():
    cfg = harness.build_config(brokers="127.0.0.1:1", group_id="g", topics=["a.b"],
                               dsn="host=127.0.0.1 port=1 dbname=x", http_port=1,
                               metrics_port=2)
    text = harness.render_config(cfg, "c.kafka.max_message_bytes = 4096")
    assert '["session.timeout.ms"] = "6000"' in text
    assert text.rstrip().endswith("return c")
    assert harness.lua_str('a"b\\c\n') == '"a\\"b\\\\c\\010"'
