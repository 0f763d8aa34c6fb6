"""Helpers for the HTTP API, metrics and replay end-to-end tests (test_api.py,
test_metrics.py, test_replay.py): an HTTP client bound to a running eventsink, the JSON
error shape, waiting for replay jobs and journal rows, reading Kafka positions and the
consumer group's progress, and a small Prometheus text-format parser.

Built on harness.py only; it changes nothing there."""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from typing import Any, Sequence

import requests
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

import harness
from harness import query, query_dicts, scalar

# the tokens of CONTRACT section 2 used by the tests
OPS_TOKEN = "ops-token-123"
ACME_TOKEN = "acme-token-123"
VIEWER_TOKEN = "viewer-token-1"
TOKENS = [
    {"name": "ops", "token": OPS_TOKEN, "role": "operator"},
    {"name": "acme-only", "token": ACME_TOKEN, "role": "operator", "tenants": ["acme"]},
    {"name": "viewer", "token": VIEWER_TOKEN, "role": "viewer"},
]
TOKENS_OVERRIDE = {"http": {"tokens": TOKENS}}

EVENT_COLUMNS = ("id", "tenant_id", "event_type", "topic", "kafka_partition", "kafka_offset",
                 "event_key", "headers", "payload", "received_at", "replay_count",
                 "replay_source", "replayed_from_event_id", "replay_verified")
MARKERS = ("_replayed_from_event_id", "_replay_source", "_replay_job_id")

# ISO 8601 with a zone: 2026-01-01T10:00:00.123456+00:00 or ...Z
ISO_WITH_ZONE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}(:?\d{2})?)$")

_UNSET = object()


# --------------------------------------------------------------------------------------
# where a sink listens
# --------------------------------------------------------------------------------------

def listen_address(sink: harness.SinkProcess, section: str) -> str:
    """The `listen` of the http or metrics table in the sink's configuration file."""
    text = sink.config_path.read_text()
    m = re.search(r"^\s*" + section + r" = \{\s*listen = \"([^\"]+)\"", text, re.M)
    assert m, f"no {section}.listen in {sink.config_path}"
    return m.group(1)


def local_url(listen: str) -> str:
    host, port = listen.rsplit(":", 1)
    if host in ("0.0.0.0", "*", ""):
        host = harness.LOOPBACK
    return f"http://{host}:{port}"


class Api:
    """requests against one eventsink's operator API, with an optional bearer token."""

    def __init__(self, base: str, token: str | None = None):
        self.base = base.rstrip("/")
        self.token = token
        self.session = requests.Session()

    def as_token(self, token: str | None) -> "Api":
        return Api(self.base, token)

    def request(self, method: str, path: str, *, token: Any = _UNSET, headers=None,
                timeout: float = 60, **kw) -> requests.Response:
        h = dict(headers or {})
        tok = self.token if token is _UNSET else token
        if tok is not None:
            h["Authorization"] = f"Bearer {tok}"
        return self.session.request(method, self.base + path, headers=h,
                                    timeout=harness.scaled(timeout), **kw)

    def get(self, path: str, **kw) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return self.request("POST", path, **kw)


def api_for(sink: harness.SinkProcess, token: str | None = None) -> Api:
    return Api(local_url(listen_address(sink, "http")), token)


def metrics_url(sink: harness.SinkProcess) -> str:
    return local_url(listen_address(sink, "metrics")) + "/metrics"


def describe(r: requests.Response) -> str:
    return f"{r.request.method} {r.request.url} -> {r.status_code} {r.text[:600]!r}"


def ok_json(r: requests.Response, status: int = 200) -> Any:
    assert r.status_code == status, f"expected {status}: {describe(r)}"
    assert r.headers.get("Content-Type", "").startswith("application/json"), describe(r)
    return r.json()


def error_json(r: requests.Response, status: int, code: str | None = None) -> dict:
    """Checks an error answer: the status and the body {"error": code, "message": text}."""
    assert r.status_code == status, f"expected {status}: {describe(r)}"
    assert r.headers.get("Content-Type", "").startswith("application/json"), describe(r)
    body = r.json()
    assert isinstance(body, dict), describe(r)
    assert isinstance(body.get("error"), str) and body["error"], describe(r)
    assert isinstance(body.get("message"), str) and body["message"], describe(r)
    if code is not None:
        assert body["error"] == code, describe(r)
    return body


# --------------------------------------------------------------------------------------
# jobs and rows
# --------------------------------------------------------------------------------------

FINAL_JOB_STATUSES = ("done", "failed", "cancelled")


def wait_job(api: Api, job_id: int, timeout: float = 120, statuses=FINAL_JOB_STATUSES,
             sinks: Sequence[harness.SinkProcess] = ()) -> dict:
    """Polls GET /replay/jobs/{id} until its status is one of statuses; returns the job."""
    last: dict = {}

    def done():
        nonlocal last
        harness._check_alive(sinks)
        r = api.get(f"/replay/jobs/{job_id}")
        last = ok_json(r)
        return last if last["status"] in statuses else None
    try:
        return harness.wait_for(done, timeout, interval=0.25,
                                what=f"replay job {job_id} to be {'/'.join(statuses)}")
    except AssertionError as e:
        raise AssertionError(f"{e}; last state {last}") from None


def wait_job_progress(api: Api, job_id: int, minimum: int, timeout: float = 120,
                      sinks: Sequence[harness.SinkProcess] = ()) -> dict:
    def progressed():
        harness._check_alive(sinks)
        j = ok_json(api.get(f"/replay/jobs/{job_id}"))
        return j if j["succeeded"] >= minimum else None
    return harness.wait_for(progressed, timeout, interval=0.1,
                            what=f"replay job {job_id} to have sent {minimum} events")


def job_row(dsn: str, job_id: int) -> dict:
    rows = query_dicts(dsn, "SELECT * FROM replay_jobs WHERE id = %s", (job_id,))
    assert rows, f"no replay_jobs row {job_id}"
    return rows[0]


def wait_journal_at(dsn: str, topic: str, partition: int, offset: int,
                    sinks: Sequence[harness.SinkProcess] = (), timeout: float = 120) -> dict:
    def get():
        harness._check_alive(sinks)
        rows = query_dicts(dsn, "SELECT * FROM event_journal WHERE topic = %s AND "
                                "kafka_partition = %s AND kafka_offset = %s",
                           (topic, partition, offset))
        return rows[0] if rows else None
    return harness.wait_for(get, timeout, what=f"the journal row of {topic} [{partition}] @{offset}")


def journal_ids(dsn: str, topic: str | None = None, originals_only: bool = True) -> list[int]:
    sql = "SELECT id FROM event_journal WHERE true"
    params: list = []
    if topic:
        sql += " AND topic = %s"
        params.append(topic)
    if originals_only:
        sql += " AND replay_count = 0"
    return [r[0] for r in query(dsn, sql + " ORDER BY id", params)]


def strip_markers(payload: dict) -> dict:
    return {k: v for k, v in payload.items() if k not in MARKERS}


# --------------------------------------------------------------------------------------
# Kafka
# --------------------------------------------------------------------------------------

def _probe_consumer(kafka: harness.KafkaBroker, group: str | None = None) -> Consumer:
    return Consumer({"bootstrap.servers": kafka.bootstrap,
                     "group.id": group or f"probe-{uuid.uuid4().hex}",
                     "enable.auto.commit": False, "auto.offset.reset": "earliest"})


def end_offsets(kafka: harness.KafkaBroker, topic: str, partitions: int = 4) -> dict[int, int]:
    """The end offset of each partition; a broker that is just back (not leader yet) is
    asked again, for up to a minute."""
    c = _probe_consumer(kafka)
    deadline = time.monotonic() + harness.scaled(60)
    try:
        while True:
            try:
                return {p: c.get_watermark_offsets(TopicPartition(topic, p),
                                                   timeout=harness.scaled(30))[1]
                        for p in range(partitions)}
            except KafkaException as e:
                err = e.args[0]
                retry = err.retriable() or err.code() in (KafkaError.NOT_LEADER_FOR_PARTITION,
                                                          KafkaError.LEADER_NOT_AVAILABLE)
                if not retry or time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)
    finally:
        c.close()


def wait_caught_up(kafka: harness.KafkaBroker, group_id: str, topics: Sequence[str],
                   partitions: int = 4, timeout: float = 180,
                   sinks: Sequence[harness.SinkProcess] = ()) -> int:
    """Waits until the group has committed every record now in the topics (its committed
    offset is the end of each partition): everything produced so far has been consumed
    and stored. Returns the number of records."""
    ends = {t: end_offsets(kafka, t, partitions) for t in topics}
    last = {}

    def caught_up():
        nonlocal last
        harness._check_alive(sinks)
        for t in topics:
            committed = kafka.committed_offsets(group_id, t, partitions)
            last[t] = committed
            for p, end in ends[t].items():
                if end > 0 and committed[p] < end:
                    return False
        return True
    try:
        harness.wait_for(caught_up, timeout, interval=0.3, what="the consumer group to catch up")
    except AssertionError as e:
        raise AssertionError(f"{e}: end offsets {ends}, committed {last}") from None
    return sum(sum(v.values()) for v in ends.values())


def kafka_record_at(kafka: harness.KafkaBroker, topic: str, partition: int, offset: int,
                    timeout: float = 30):
    c = _probe_consumer(kafka)
    try:
        c.assign([TopicPartition(topic, partition, offset)])

        def get():
            m = c.poll(0.5)
            if m is not None and m.error() is None and m.offset() == offset:
                return m
            return None
        return harness.wait_for(get, timeout, interval=0,
                                what=f"the Kafka record {topic} [{partition}] @{offset}")
    finally:
        c.close()


def header_map(msg) -> dict[str, bytes]:
    return {k: v for k, v in (msg.headers() or [])}


# --------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict[tuple[str, frozenset], float]:
    """Prometheus text format -> {(name, frozenset(labels)): value}."""
    out = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"unparsable metrics line: {line!r}"
        labels = frozenset((k, v.encode().decode("unicode_escape"))
                           for k, v in _LABEL.findall(m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def metric(samples: dict, name: str, **labels) -> float | None:
    """The value of the one sample of name with exactly these labels (None when absent)."""
    return samples.get((name, frozenset(labels.items())))


def metric_sum(samples: dict, name: str, **labels) -> float:
    """Sum over the samples of name whose labels include these."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def scrape(sink: harness.SinkProcess) -> dict:
    r = requests.get(metrics_url(sink), timeout=harness.scaled(30))
    assert r.status_code == 200, describe(r)
    return parse_metrics(r.text)


def wait_metric(sink, name: str, expected: float, timeout: float = 60, **labels) -> dict:
    last = None

    def check():
        nonlocal last
        s = scrape(sink)
        last = metric(s, name, **labels)
        return s if last == expected else None
    try:
        return harness.wait_for(check, timeout, what=f"{name}{labels} == {expected}")
    except AssertionError as e:
        raise AssertionError(f"{e}; last value {last}") from None


# --------------------------------------------------------------------------------------
# storage checks
# --------------------------------------------------------------------------------------

def stored_positions(dsn: str, topic: str) -> list[tuple[int, int]]:
    return [(p, o) for p, o in query(
        dsn, "SELECT kafka_partition, kafka_offset FROM event_journal WHERE topic = %s "
             "UNION ALL SELECT kafka_partition, kafka_offset FROM dead_letter_queue "
             "WHERE topic = %s", (topic, topic))]


def assert_stored_exactly_once(dsn: str, topic: str, produced: list[tuple[int, int]]) -> None:
    both = stored_positions(dsn, topic)
    dupes = [pos for pos, n in Counter(both).items() if n > 1]
    assert not dupes, f"{len(dupes)} Kafka positions stored more than once, e.g. {dupes[:5]}"
    missing = set(produced) - set(both)
    assert not missing, f"{len(missing)} produced records are missing, e.g. {sorted(missing)[:5]}"
    assert len(both) == len(produced), f"{len(both)} stored, {len(produced)} produced"


def replay_rows_of_job(dsn: str, job_id: int) -> list[dict]:
    return query_dicts(dsn, "SELECT * FROM event_journal WHERE replay_job_id = %s ORDER BY id",
                       (job_id,))


def count(dsn: str, sql: str, params=None) -> int:
    return int(scalar(dsn, sql, params) or 0)
