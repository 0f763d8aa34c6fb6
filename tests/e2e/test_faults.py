"""End-to-end tests of the failures of a real deployment, one fault each (issue 16,
docs/GUARANTEES.md section 17): a server frozen (SIGSTOP, as in a GC or VM pause) for
longer than the service's timeouts, where connections hang instead of failing.

What they prove: every wait is bounded (a PostgreSQL call that gets no answer past the
server's statement_timeout and a margin has its connection cut, counted in
eventsink_pg_connections_cut_total); /health keeps answering 200 and names what is stalled;
the service recovers by itself when the server continues; nothing is lost or stored twice."""

from __future__ import annotations

import contextlib
import threading
import time

import harness
from apihelpers import api_for, assert_stored_exactly_once, metric, scrape
from harness import PgServer, event_records, event_stream, scalar, wait_rows
from test_liveness import postgres_frozen

JOURNAL_COUNT = "SELECT count(*) FROM event_journal"
STORED = ("SELECT (SELECT count(*) FROM event_journal) + (SELECT count(*) FROM"
          " dead_letter_queue)")
# the service's bound on a PostgreSQL call (src/db_watchdog.h): statement_timeout + margin
PG_CALL_BOUND_S = 75


def _health(api) -> dict:
    r = api.get("/health", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def _records(n: int, seed: int, start: int) -> list[tuple]:
    records = event_records(event_stream(n, seed=seed, start=start))
    for i in range(0, len(records), 25):  # some for the DLQ
        records[i] = (records[i][0], b"not json " + str(start + i).encode(), None, None)
    return records


class _Stream:
    """Records produced in the background, 40 every 100 ms, until stopped: a batch is being
    written whenever a fault strikes."""

    def __init__(self, kafka, topic: str, start: int = 0):
        self.kafka, self.topic, self.produced, self.errors = kafka, topic, [], []
        self.next, self.stop_flag = start, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        producer = self.kafka.producer()
        try:
            while not self.stop_flag.is_set():
                self.produced += self.kafka.produce(self.topic,
                                                    _records(40, seed=self.next, start=self.next),
                                                    producer=producer)
                self.next += 40
                time.sleep(0.1)
        except Exception as e:  # noqa: BLE001 - reported by stop()
            self.errors.append(e)

    def stop(self) -> list[tuple[int, int]]:
        self.stop_flag.set()
        self.thread.join(timeout=harness.scaled(120))
        assert not self.thread.is_alive() and not self.errors, self.errors
        return self.produced


def _stream_after(kafka, db, topic, s, n: int, seed: int):
    """n records produced and stored first, then a stream running: (produced, stream)."""
    produced = kafka.produce(topic, _records(n, seed=seed, start=0))
    wait_rows(db, STORED, n, timeout=120, sinks=[s])
    stream = _Stream(kafka, topic, start=n)
    time.sleep(2)
    return produced, stream


def _stream_stored_once(stream: _Stream, produced: list, db, topic, s) -> list:
    """Stops the stream, waits until everything produced is stored: each record once."""
    produced = produced + stream.stop()
    wait_rows(db, STORED, len(produced), timeout=300, sinks=[s])
    assert_stored_exactly_once(db, topic, produced)
    return produced


def test_postgresql_frozen_longer_than_its_timeouts(kafka, pg, db, topic, sink):
    s = sink(topics=[topic], dsn=db, extra_config="c.health = { stall_after_s = 2 }\n",
             allow_errors=[r"PostgreSQL", r"connection", r"server"])
    api = api_for(s)
    produced, stream = _stream_after(kafka, db, topic, s, 500, seed=91)

    with postgres_frozen(pg):
        t0 = time.monotonic()
        # calls hang: /health still answers 200, and names what is stalled
        harness.wait_for(lambda: _health(api)["stalled"], harness.scaled(30),
                         what="/health naming a stalled component")
        # the service's own bounds end the waits, not the server (which answers nothing):
        # the idle ping's (10 s), a batch write's (statement_timeout and a margin)
        s.wait_log(r"PostgreSQL has not answered a call for \d+ s.*the connection is cut",
                   timeout=PG_CALL_BOUND_S + harness.scaled(30))
        assert metric(scrape(s), "eventsink_pg_connections_cut_total") >= 1
        # the batch is held and written again; reconnecting to the frozen server fails
        # within connect_timeout, again and again, and /health says PostgreSQL is down
        s.wait_log(r"PostgreSQL unavailable \(.*\); holding a batch", timeout=60)
        harness.wait_for(lambda: _health(api)["postgres"] == "down", harness.scaled(30),
                         what="/health: postgres down")
        # frozen past every bound: no thread of the service waits for ever
        while time.monotonic() - t0 < PG_CALL_BOUND_S + 10:
            assert s.alive() and _health(api)["postgres"] == "down"
            time.sleep(2)
        stalled = [c["component"] for c in _health(api)["stalled"]]
        assert "writer" not in stalled, stalled
    # continued: the service recovers by itself, everything stored once
    _stream_stored_once(stream, produced, db, topic, s)
    harness.wait_for(lambda: _health(api)["status"] == "ok" and _health(api)["postgres"] == "up",
                     harness.scaled(120), what="/health ok again")
    assert s.alive()


def test_kafka_broker_frozen_longer_than_its_timeouts(kafka, db, topic, sink):
    s = sink(topics=[topic], dsn=db, allow_errors=[r"kafka", r"Kafka", r"broker", r"commit",
                                                   r"timed out", r"Timed out"])
    api = api_for(s)
    produced = kafka.produce(topic, _records(1000, seed=93, start=0))
    wait_rows(db, STORED, 1000, timeout=120, sinks=[s])
    # more records the service has fetched or not when the broker stops
    produced += kafka.produce(topic, _records(3000, seed=94, start=1000))
    kafka.freeze()
    try:
        # past librdkafka's socket and session timeouts (60 s, 45 s)
        end = time.monotonic() + 65
        while time.monotonic() < end:
            h = _health(api)  # the API answers throughout
            assert h["status"] in ("ok", "stalled"), h
            assert s.alive()
            time.sleep(5)
    finally:
        kafka.thaw()
    produced += kafka.produce(topic, _records(1000, seed=95, start=4000))
    wait_rows(db, STORED, 5000, timeout=300, sinks=[s])
    assert_stored_exactly_once(db, topic, produced)
    harness.wait_for(lambda: _health(api)["kafka"] == "up", harness.scaled(60),
                     what="/health: kafka up")
    assert s.alive()


# --------------------------------------------------------------------------------------
# PostgreSQL out of disk
# --------------------------------------------------------------------------------------

@contextlib.contextmanager
def _server_on_small_disk(mb: int):
    """A PostgreSQL server of its own whose data folder is on a tmpfs of `mb` MiB, stopped
    and unmounted at the end."""
    mnt = harness.TEST_ROOT / "pg-small-disk"
    PgServer.clean_stale(mnt)
    harness.mount_small_disk(mnt, mb)
    server = PgServer(mnt)
    try:
        server.start()
        yield server
    finally:
        server.stop("immediate")
        harness.unmount_small_disk(mnt)


def test_postgresql_out_of_disk_pauses_and_resumes_without_dead_lettering(kafka, topic, sink):
    """PostgreSQL's disk fills up while events flow: 53100 (disk full) and the server's
    crash on a WAL write it cannot make are outages, not bad rows. The service holds its
    batch (offsets not committed), says so (/health postgres down, the log, the metric)
    and resumes by itself once there is room again; no good event is dead-lettered."""
    with _server_on_small_disk(320) as server:
        db = server.new_database("disk")
        s = sink(topics=[topic], dsn=db, allow_errors=[r"PostgreSQL", r"space", r"server",
                                                       r"connection", r"disk"])
        api = api_for(s)
        produced = kafka.produce(topic, _records(1000, seed=96, start=0))
        wait_rows(db, STORED, 1000, timeout=120, sinks=[s])

        filler = harness.fill_disk(server.dir)
        stream = _Stream(kafka, topic, start=1000)
        s.wait_log(r"PostgreSQL unavailable \(.*(No space left on device|could not extend|"
                   r"could not write|terminat|server closed)", timeout=120)
        harness.wait_for(lambda: _health(api)["postgres"] == "down", harness.scaled(60),
                         what="/health: postgres down while the disk is full")
        assert metric(scrape(s), "eventsink_postgres_up") == 0
        time.sleep(10)  # full for a while: the batch stays held, nothing is dead-lettered
        assert s.alive()
        filler.unlink()
        # room again: a server that crashed on the full disk and could not recover is
        # started again, as its supervisor would
        deadline = time.monotonic() + harness.scaled(60)
        while not harness.pg_answers(server) and time.monotonic() < deadline:
            time.sleep(1)
        if not harness.pg_answers(server):
            server.stop("immediate")
            server.start()
        produced += stream.stop()
        wait_rows(db, STORED, len(produced), timeout=300, sinks=[s])
        assert_stored_exactly_once(db, topic, produced)
        rejected = scalar(db, "SELECT count(*) FROM dead_letter_queue"
                              " WHERE reason <> 'invalid_json'")
        assert rejected == 0, "a good event was dead-lettered because of the full disk"
        harness.wait_for(lambda: _health(api)["postgres"] == "up", harness.scaled(60),
                         what="/health: postgres up")
        assert s.alive()
        assert s.terminate() == 0
