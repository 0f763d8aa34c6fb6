"""End-to-end tests of the Prometheus endpoint (CONTRACT section 7): the text format passes
`promtool check metrics`, every contract metric is there with HELP and TYPE, the counters
follow what the service did, and a real Prometheus server scrapes it (up == 1)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

import harness
from apihelpers import (api_for, metric, metric_sum, metrics_url, ok_json, parse_metrics,
                        scrape, wait_journal_at, wait_metric)
from harness import event_records, event_stream, make_event, scalar, wait_rows

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
PROMETHEUS = "/usr/bin/prometheus"

CONTRACT_METRICS = {
    "eventsink_events_consumed_total": "counter",
    "eventsink_events_persisted_total": "counter",
    "eventsink_dlq_events_total": "counter",
    "eventsink_dlq_pending": "gauge",
    "eventsink_replays_total": "counter",
    "eventsink_replay_jobs_running": "gauge",
    "eventsink_batch_size": "histogram",
    "eventsink_batch_duration_seconds": "histogram",
    "eventsink_consumer_lag": "gauge",
    "eventsink_policy_reloads_total": "counter",
    "eventsink_policy_version": "gauge",
    "eventsink_postgres_up": "gauge",
    "eventsink_kafka_up": "gauge",
    "eventsink_http_requests_total": "counter",
}
PROCESS_METRICS = ("process_cpu_seconds_total", "process_resident_memory_bytes",
                   "process_open_fds", "process_start_time_seconds")

POISON = [
    (b'{"tenant_id": "acme", "event_type": "lead.created"', "invalid_json"),
    (b"plain text, not JSON", "invalid_json"),
    (b'{"tenant_id": "acme", "event_type": "x", "n": "\xff\xfe"}', "invalid_utf8"),
    (b'{"event_type": "lead.created"}', "missing_tenant"),
    (b'{"tenant_id": null, "event_type": "lead.created"}', "missing_tenant"),
]


def _types_and_helps(text: str) -> tuple[dict, set]:
    types, helps = {}, set()
    for line in text.splitlines():
        parts = line.split(" ", 3)
        if line.startswith("# TYPE ") and len(parts) >= 4:
            types[parts[2]] = parts[3].strip()
        elif line.startswith("# HELP ") and len(parts) >= 3:
            helps.add(parts[2])
    return types, helps


def _promtool(text: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=harness.scaled(60))


def test_metrics_follow_what_the_service_did(kafka, db, topic, sink):
    n = 300
    s = sink(topics=[topic], dsn=db)
    api = api_for(s)
    url = metrics_url(s)

    # before any event: every family is declared and promtool is happy
    r = requests.get(url, timeout=harness.scaled(30))
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    check = _promtool(r.text)
    assert check.returncode == 0, f"promtool check metrics:\n{check.stdout}{check.stderr}"
    before = parse_metrics(r.text)
    assert metric(before, "eventsink_dlq_events_total", reason="db_reject") == 0
    assert metric(before, "eventsink_replays_total", source="operator_api", result="ok") == 0

    records = event_records(event_stream(n, seed=5))
    records += [(f"poison-{i}", v, None, None) for i, (v, _) in enumerate(POISON)]
    kafka.produce(topic, records)
    wait_rows(db, "SELECT count(*) FROM event_journal", n, sinks=[s])
    wait_rows(db, "SELECT count(*) FROM dead_letter_queue", len(POISON), sinks=[s])
    assert ok_json(api.get("/events/latest", params={"limit": 3}))["events"]
    assert api.get("/events/abc").status_code == 400

    # the lag of each assigned partition comes with the statistics: wait for it
    def lag_of_every_partition():
        s_ = scrape(s)
        lags = {dict(ls)["partition"]: v for (name, ls), v in s_.items()
                if name == "eventsink_consumer_lag" and dict(ls).get("topic") == topic}
        return s_ if set(lags) == {"0", "1", "2", "3"} and not any(lags.values()) else None
    samples = harness.wait_for(lag_of_every_partition, 60,
                               what=f"eventsink_consumer_lag of the 4 partitions of {topic} at 0")

    r = requests.get(url, timeout=harness.scaled(30))
    text = r.text
    check = _promtool(text)
    assert check.returncode == 0, f"promtool check metrics:\n{check.stdout}{check.stderr}"
    types, helps = _types_and_helps(text)
    for name, kind in CONTRACT_METRICS.items():
        assert types.get(name) == kind, f"# TYPE {name} is {types.get(name)!r}, expected {kind}"
        assert name in helps, f"no # HELP for {name}"
    for name in PROCESS_METRICS:
        assert name in types and name in helps, f"no {name}"
    samples = parse_metrics(text)

    assert metric(samples, "eventsink_events_consumed_total", topic=topic) == n + len(POISON)
    assert metric(samples, "eventsink_events_persisted_total", topic=topic,
                  kind="original") == n
    assert (metric(samples, "eventsink_events_persisted_total", topic=topic, kind="replayed")
            or 0) == 0
    for reason in ("invalid_json", "invalid_utf8", "missing_tenant"):
        want = sum(1 for _, r_ in POISON if r_ == reason)
        assert metric(samples, "eventsink_dlq_events_total", reason=reason) == want, reason
    assert metric(samples, "eventsink_dlq_events_total", reason="db_reject") == 0
    assert metric(samples, "eventsink_dlq_pending") == len(POISON)
    assert metric(samples, "eventsink_replay_jobs_running") == 0
    assert metric(samples, "eventsink_postgres_up") == 1
    assert metric(samples, "eventsink_kafka_up") == 1
    assert metric(samples, "eventsink_policy_version") == 1
    assert metric(samples, "eventsink_policy_reloads_total", result="error") == 0
    # every persisted event went through a batch; the histograms are cumulative
    count = metric(samples, "eventsink_batch_size_count")
    assert count and count >= 1
    assert metric(samples, "eventsink_batch_size_sum") >= n
    assert metric(samples, "eventsink_batch_size_bucket", le="+Inf") == count
    assert metric(samples, "eventsink_batch_duration_seconds_count") == count
    assert metric(samples, "eventsink_batch_duration_seconds_bucket", le="+Inf") == count
    assert metric(samples, "eventsink_http_requests_total", route="/events/latest",
                  code="200") >= 1
    assert metric_sum(samples, "eventsink_http_requests_total", code="400") >= 1
    assert metric(samples, "process_open_fds") > 0
    assert metric(samples, "process_resident_memory_bytes") > 0

    # a replay: replays_total and the replayed kind move, and the DLQ gauge follows a discard
    ev_id = scalar(db, "SELECT min(id) FROM event_journal")
    body = ok_json(api.post(f"/replay/{ev_id}"), 202)
    k = body["kafka"]
    wait_journal_at(db, k["topic"], k["partition"], k["offset"], sinks=[s])
    samples = wait_metric(s, "eventsink_events_persisted_total", 1, topic=topic, kind="replayed")
    assert metric(samples, "eventsink_replays_total", source="operator_api", result="ok") == 1
    assert metric(samples, "eventsink_replays_total", source="operator_api", result="failed") == 0
    assert metric(samples, "eventsink_events_persisted_total", topic=topic, kind="original") == n
    assert metric(samples, "eventsink_events_consumed_total", topic=topic) == n + len(POISON) + 1
    dlq_id = scalar(db, "SELECT min(id) FROM dead_letter_queue")
    ok_json(api.post(f"/dlq/{dlq_id}/discard"))
    samples = scrape(s)
    assert metric(samples, "eventsink_dlq_pending") == len(POISON) - 1
    assert metric(samples, "eventsink_http_requests_total", route="/replay/{id}", code="202") == 1

    # HEAD works, other paths and methods answer with errors, not metrics
    assert requests.head(url, timeout=harness.scaled(30)).status_code == 200
    assert requests.get(url.replace("/metrics", "/nope"), timeout=harness.scaled(30)
                        ).status_code == 404
    assert requests.post(url, timeout=harness.scaled(30)).status_code == 405


def test_prometheus_scrapes_the_endpoint(kafka, db, topic, sink, tmp_path):
    if not Path(PROMETHEUS).exists():
        pytest.skip(f"{PROMETHEUS} is not installed")
    s = sink(topics=[topic], dsn=db)
    kafka.produce(topic, event_records([make_event(i, tenant="acme") for i in range(25)]))
    wait_rows(db, "SELECT count(*) FROM event_journal", 25, sinks=[s])
    target = metrics_url(s).split("//", 1)[1].split("/", 1)[0]
    port = harness.free_port()
    conf = tmp_path / "prometheus.yml"
    conf.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: eventsink\n"
        f"    static_configs:\n      - targets: ['{target}']\n")
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={conf}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address={harness.LOOPBACK}:{port}"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            cwd=str(tmp_path), start_new_session=True)

    def kill():
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    harness.register_cleanup(kill)
    try:
        base = f"http://{harness.LOOPBACK}:{port}/api/v1/query"

        def query(q):
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
            r = requests.get(base, params={"query": q}, timeout=5)
            if r.status_code != 200:
                return None
            body = r.json()
            assert body["status"] == "success", body
            return body["data"]["result"]

        def up():
            res = query('up{job="eventsink"}')
            return res if res and res[0]["value"][1] == "1" else None
        res = harness.wait_for(up, 90, interval=0.5,
                               what="Prometheus to report up == 1 for the eventsink job")
        assert res[0]["metric"]["instance"] == target

        def consumed():
            res = query(f'eventsink_events_consumed_total{{topic="{topic}"}}')
            return res if res and res[0]["value"][1] == "25" else None
        harness.wait_for(consumed, 60, interval=0.5,
                         what="Prometheus to have eventsink_events_consumed_total == 25")

        def scrape_ok():
            res = query('scrape_samples_scraped{job="eventsink"}')
            return res if res and float(res[0]["value"][1]) > 20 else None
        harness.wait_for(scrape_ok, 30, interval=0.5, what="scrape_samples_scraped")
        targets = requests.get(f"http://{harness.LOOPBACK}:{port}/api/v1/targets",
                               timeout=5).json()["data"]["activeTargets"]
        assert [t["health"] for t in targets] == ["up"], json.dumps(targets)[:2000]
        assert not targets[0].get("lastError"), targets[0]
    finally:
        kill()
        harness.unregister_cleanup(kill)
        log.close()
