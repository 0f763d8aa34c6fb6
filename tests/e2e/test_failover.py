"""End-to-end test of a PostgreSQL failover (issue 16, docs/GUARANTEES.md section 17): a
primary with a synchronous standby, the service on a multi-host `postgres.dsn` with
`target_session_attrs=read-write`; the primary killed (SIGKILL, every process) while a
stream is being written, the standby promoted. Nothing the primary acknowledged is lost
(the standby had flushed it first), a batch whose commit the service never saw
acknowledged is found at the fence when written again, and everything is stored once."""

from __future__ import annotations

import time

import pytest

import harness
import replication
from apihelpers import api_for, assert_stored_exactly_once
from harness import PgServer, scalar, wait_rows
from test_faults import STORED, _health, _records, _Stream


@pytest.fixture
def primary_and_standby():
    harness.session_lock()
    directory = harness.TEST_ROOT / "pg-primary"
    PgServer.clean_stale(directory)
    primary = PgServer(directory)
    primary.start()
    standby = replication.standby_of(primary, harness.TEST_ROOT / "pg-standby",
                                     synchronous=True)
    yield primary, standby
    standby.stop("immediate")
    if primary.running:
        primary.stop("immediate")


def _multi_host(primary: PgServer, standby: PgServer, dbname: str) -> str:
    return (f"host={harness.LOOPBACK},{harness.LOOPBACK} port={primary.port},{standby.port}"
            f" user=eventsink dbname={dbname} target_session_attrs=read-write")


def test_failover_to_a_synchronous_standby_loses_nothing(primary_and_standby, kafka, topic,
                                                         sink):
    primary, standby = primary_and_standby
    db = primary.new_database("failover")
    dbname = db.rsplit("dbname=", 1)[1]
    s = sink(topics=[topic], dsn=_multi_host(primary, standby, dbname),
             allow_errors=[r"PostgreSQL", r"connection", r"server", r"read-only",
                           r"terminat", r"recovery"])
    api = api_for(s)
    produced = kafka.produce(topic, _records(1000, seed=111, start=0))
    wait_rows(db, STORED, 1000, timeout=120, sinks=[s])
    stream = _Stream(kafka, topic, start=1000)
    time.sleep(3)  # batches are being committed, and waiting for the standby's flush

    replication.kill_server(primary)
    on_standby = standby.dsn(dbname)
    acknowledged = scalar(on_standby, STORED)  # the standby has every acknowledged commit
    # until the promotion the one host left is read-only: the service holds its batch
    s.wait_log(r"PostgreSQL unavailable \(", timeout=60)
    harness.wait_for(lambda: _health(api)["postgres"] == "down", harness.scaled(60),
                     what="/health: postgres down with the primary gone")
    time.sleep(3)
    assert scalar(on_standby, STORED) == acknowledged  # nothing written to a standby
    replication.promote(standby)

    # the service finds the new primary by itself (the second host of its DSN)
    produced += stream.stop()
    wait_rows(on_standby, STORED, len(produced), timeout=300, sinks=[s])
    assert_stored_exactly_once(on_standby, topic, produced)
    harness.wait_for(lambda: _health(api)["postgres"] == "up", harness.scaled(60),
                     what="/health: postgres up on the new primary")
    assert s.alive()
