"""pytest fixtures for the end-to-end tests: one PostgreSQL server and one Kafka broker for
the whole session, a fresh database and fresh topics per test, and eventsink processes
that are always stopped and whose logs are checked at the end of each test."""

from __future__ import annotations

import pytest

import harness
from harness import KafkaBroker, PgServer, SinkFactory


@pytest.fixture(scope="session")
def pg():
    harness.session_lock()
    directory = harness.TEST_ROOT / "pg"
    PgServer.clean_stale(directory)
    server = PgServer(directory)
    server.start()
    harness.PG_SERVER = server
    yield server
    harness.PG_SERVER = None
    server.stop("fast")


@pytest.fixture(scope="session")
def kafka():
    harness.session_lock()
    directory = harness.TEST_ROOT / "kafka"
    KafkaBroker.clean_stale(directory)
    broker = KafkaBroker(directory)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(autouse=True)
def _pg_back_up():
    """A test that stopped PostgreSQL and failed before starting it again must not take
    the following tests down with it."""
    yield
    server = getattr(harness, "PG_SERVER", None)
    if server is not None and not server.running:
        server.start()


@pytest.fixture
def db(pg, request):
    """A fresh, empty database; its DSN."""
    return pg.new_database(request.node.name)


@pytest.fixture
def topic(kafka):
    """A fresh topic with 4 partitions."""
    return kafka.create_topic(partitions=4)


@pytest.fixture
def sink(kafka, tmp_path, request):
    """Factory: sink(topics=[...], dsn=..., extra_config=lua, policies=[...],
    batch={...}, group_id=..., overrides={...}, allow_errors=False) -> SinkProcess.
    At teardown every sink still running gets SIGTERM, and the test fails if a log has a
    sanitizer report or (unless allow_errors) an error line."""
    factory = SinkFactory(tmp_path, kafka, request.node.name)
    yield factory
    problems = factory.teardown()
    if problems:
        pytest.fail("eventsink logs after the test:\n\n" + "\n\n".join(problems), pytrace=False)


@pytest.fixture
def start_sink(sink):
    """The same factory as `sink`, by a more telling name."""
    return sink


@pytest.fixture
def sink_factory_offline(tmp_path, request):
    """A SinkFactory without a broker, only to write configuration files for the CLI."""
    return SinkFactory(tmp_path, None, request.node.name)
