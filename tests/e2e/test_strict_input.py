"""Strict input (CONTRACT 9.3): a request field or query parameter the endpoint does not
know is a 400 naming it, on every route; a %00 anywhere in the path or the query is a 400;
every signed webhook request, dry runs included, records its signature (a repeat is 409);
and `eventsink check` refuses every value the service refuses at start-up."""

from __future__ import annotations

import http.client
import json
import re
import threading
import time

import pytest

import harness
from apihelpers import api_for, describe, error_json, listen_address, ok_json
from harness import event_records, make_event, query, scalar, wait_rows
from policyhelpers import post_webhook, signed_request

SECRET = "whsec-strict-0123456789"
RANGE = {"start": "2000-01-01T00:00:00Z", "end": "2100-01-01T00:00:00Z"}

# the route tables, read from the source (as tests/e2e/test_attacks.py does)
_ROUTE = re.compile(r'\{"(GET|POST|PUT|PATCH|DELETE)", "(/[^"]*)", (true|false), \w+[,}]')


def _routes() -> list[tuple[str, str]]:
    out = []
    for f in sorted((harness.REPO / "src").glob("api_*.c")):
        out += [(m.group(1), m.group(2)) for m in _ROUTE.finditer(f.read_text())]
    return out


class Sink:
    def __init__(self, kafka, db, topic, sink):
        self.db = db
        self.s = sink(topics=[topic], dsn=db,
                      overrides={"webhooks": {"secret": SECRET, "tolerance_s": 300}})
        self.api = api_for(self.s)
        orphan = make_event(6)
        del orphan["tenant_id"]  # dead-lettered: missing_tenant
        kafka.produce(topic, event_records(
            [make_event(i, tenant="acme" if i % 2 else "globex") for i in range(6)] + [orphan]))
        wait_rows(db, "SELECT count(*) FROM event_journal", 6, sinks=[self.s])
        wait_rows(db, "SELECT count(*) FROM dead_letter_queue", 1, sinks=[self.s])
        self.event = scalar(db, "SELECT min(id) FROM event_journal")
        self.dlq = scalar(db, "SELECT min(id) FROM dead_letter_queue")
        r = ok_json(self.api.post("/replay/batch", json={"ids": [self.event]}), 202)
        self.job = r["job_id"]

    def path(self, template: str) -> str:
        return (template.replace("/events/{id}", f"/events/{self.event}")
                .replace("/dlq/{id}", f"/dlq/{self.dlq}")
                .replace("/replay/jobs/{id}", f"/replay/jobs/{self.job}")
                .replace("/replay/{id}", f"/replay/{self.event}"))

    def raw(self, method: str, target: str, body: bytes | None = None, headers=None):
        """A request with exactly this target (no client-side quoting): (status, json)."""
        host, port = listen_address(self.s, "http").rsplit(":", 1)
        c = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            c.request(method, target, body=body, headers=headers or {})
            r = c.getresponse()
            data = r.read()
            return r.status, (json.loads(data) if data[:1] == b"{" else data)
        finally:
            c.close()

    def jobs(self) -> int:
        return scalar(self.db, "SELECT count(*) FROM replay_jobs")


def _names(body: dict, *names: str) -> None:
    for n in names:
        assert n in body["message"], f"the error does not name {n!r}: {body}"


def test_unknown_fields_and_query_parameters_are_400_naming_them(kafka, db, topic, sink):
    w = Sink(kafka, db, topic, sink)
    api = w.api
    # the cases: a typo in a range replay's body matched every tenant
    b = error_json(api.post("/replay/range", json=dict(RANGE, tenat="acme", dry_run=True)), 400)
    _names(b, "tenat")
    b = error_json(api.post("/replay/range", params=dict(RANGE, tenat="acme", dry_run="true")),
                   400)
    _names(b, "tenat")
    b = error_json(api.get("/events/latest", params={"before": 5}), 400)
    _names(b, "before")
    # several at once: every one is named
    b = error_json(api.get("/events/latest", params={"limit": 1, "befor": 1, "tenat": "x"}), 400)
    _names(b, "befor", "tenat")
    b = error_json(api.post("/replay/batch", json={"ids": [w.event], "reasn": "x", "idz": [1]}),
                   400)
    _names(b, "reasn", "idz")
    # a parameter given twice is ambiguous
    error_json(api.get("/events/latest?tenant=acme&tenant=globex"), 400)
    # what the endpoints know still works
    assert ok_json(api.get("/events/latest", params={"limit": 2, "tenant": "acme",
                                                     "topic": topic, "replayed": "false"}))
    got = ok_json(api.post("/replay/range", json=dict(RANGE, tenant="acme", dry_run=True)))
    assert got["matched"] == 3, got
    assert ok_json(api.get("/dlq", params={"status": "pending", "limit": 5, "reason": "",
                                           "topic": "", "tenant": ""}))
    assert ok_json(api.get("/replay/jobs", params={"status": "pending", "limit": 5}))
    assert ok_json(api.get("/stats", params={"window_s": 600, "bin_s": 10}))

    # every route: an unknown query parameter, and on POST an unknown body field
    jobs = w.jobs()
    problems = []
    for method, template in _routes():
        path = w.path(template)
        r = api.request(method, path + "?zz_unknown=1",
                        json={} if method == "POST" else None)
        if r.status_code != 400 or "zz_unknown" not in r.text:
            problems.append(f"?zz_unknown: {describe(r)}")
        else:
            error_json(r, 400)
        if method == "POST":
            body = {"ids": [w.event]} if template in ("/replay/batch",) else \
                dict(RANGE, dry_run=True) if template == "/replay/range" else {}
            body["zz_field"] = 1
            if template == "/webhooks/replay":
                data, headers = signed_request(SECRET, body)
                r = post_webhook(api, data, headers)
            else:
                r = api.post(path, json=body)
            if r.status_code != 400 or "zz_field" not in r.text:
                problems.append(f"body zz_field: {describe(r)}")
            else:
                error_json(r, 400)
    assert not problems, "\n".join(problems)
    assert w.jobs() == jobs, "a refused request created a job"
    # the webhook's two forms: a range field beside ids is unknown there
    data, headers = signed_request(SECRET, {"ids": [w.event], "tenant": "acme"})
    _names(error_json(post_webhook(api, data, headers), 400), "tenant")
    assert w.s.alive()


def test_nul_anywhere_in_the_path_or_query_is_400(kafka, db, topic, sink):
    w = Sink(kafka, db, topic, sink)
    jobs = w.jobs()
    for method, target in [
            ("GET", f"/events/{w.event}%00/lineage"), ("GET", f"/events/{w.event}%00"),
            ("GET", "/health%00"), ("GET", "/health%00/x"), ("GET", "/events/latest%00"),
            ("GET", "/events/latest?limit=1&tenant=acme%00"), ("GET", "/events/latest?%00=1"),
            ("GET", "/events/latest?limit%00=1"), ("GET", "/events/latest?limit=1&%00"),
            ("POST", f"/replay/{w.event}%00"), ("POST", f"/replay/{w.event}%00/x"),
            ("POST", f"/dlq/{w.dlq}%00/discard"), ("POST", "/admin/reload%00")]:
        status, body = w.raw(method, target)
        assert status == 400, f"{method} {target} -> {status} {body!r}"
        assert isinstance(body, dict) and body.get("error") and body.get("message"), body
    assert w.jobs() == jobs
    assert scalar(db, "SELECT status FROM dead_letter_queue WHERE id = %s", (w.dlq,)) == "pending"
    # an escaped percent sign is data, not a NUL
    status, body = w.raw("GET", "/events/latest?tenant=%2500")
    assert status == 200 and body == {"events": []}, (status, body)
    # the metrics listener too
    host, port = listen_address(w.s, "metrics").rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=30)
    c.request("GET", "/metrics%00")
    assert c.getresponse().status in (400, 404)
    c.close()


def test_every_signed_webhook_records_its_signature(kafka, db, topic, sink):
    w = Sink(kafka, db, topic, sink)
    api = w.api
    signatures = lambda: scalar(db, "SELECT count(*) FROM webhook_signatures")  # noqa: E731
    n0 = signatures()
    # a dry run, twice: 200 then 409
    data, headers = signed_request(SECRET, dict(RANGE, tenant="acme", dry_run=True))
    assert ok_json(post_webhook(api, data, headers))["matched"] == 3
    error_json(post_webhook(api, data, headers), 409, "replayed_signature")
    assert signatures() == n0 + 1
    # a signed request that is refused (unknown field, bad range) is recorded too
    for payload in (dict(RANGE, tenat="acme", dry_run=True), {"start": "x", "end": "y"},
                    {"ids": []}):
        data, headers = signed_request(SECRET, payload)
        error_json(post_webhook(api, data, headers), 400)
        error_json(post_webhook(api, data, headers), 409, "replayed_signature")
    assert signatures() == n0 + 4
    # the same dry run sent by 8 clients at once: one 200, the others 409
    data, headers = signed_request(SECRET, dict(RANGE, tenant="globex", dry_run=True))
    codes = []

    def send():
        codes.append(post_webhook(api_for(w.s), data, headers).status_code)
    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(codes) == [200] + [409] * 7, codes
    # a real job still works once
    jobs = w.jobs()
    data, headers = signed_request(SECRET, {"ids": [w.event]})
    ok_json(post_webhook(api, data, headers), 202)
    error_json(post_webhook(api, data, headers), 409, "replayed_signature")
    assert w.jobs() == jobs + 1
    # an unsigned or badly signed request is not recorded (there is no signature to keep)
    n = signatures()
    error_json(post_webhook(api, data, dict(headers, **{"X-Eventsink-Signature": "sha256=" +
                                                        "0" * 64})), 401)
    assert signatures() == n


# --------------------------------------------------------------------------------------
# eventsink check refuses what start-up refuses
# --------------------------------------------------------------------------------------

COMMON = dict(topics=["apexflow.leads.created"], brokers="127.0.0.1:9",
              dsn="host=127.0.0.1 port=9 dbname=nowhere user=eventsink connect_timeout=1")

BAD = [
    ("no port", {"http": {"listen": "127.0.0.1"}}, "http.listen"),
    ("port 0", {"http": {"listen": "127.0.0.1:0"}}, "http.listen"),
    ("port too big", {"http": {"listen": "127.0.0.1:70000"}}, "http.listen"),
    ("port with garbage", {"http": {"listen": "127.0.0.1:91x"}}, "http.listen"),
    ("not an address", {"http": {"listen": "127.0.0.300:9106"}}, "http.listen"),
    ("a host name", {"http": {"listen": "127.example.com:9106"}}, "http.listen"),
    ("metrics without port", {"metrics": {"listen": "127.0.0.1"}}, "metrics.listen"),
    ("metrics not an address", {"metrics": {"listen": "nowhere:9105"}}, "metrics.listen"),
    ("the same address twice", {"http": {"listen": "127.0.0.1:{p}"},
                                "metrics": {"listen": "127.0.0.1:{p}"}}, "metrics.listen"),
    ("an unknown Kafka property", {"kafka": {"properties": {"no.such.property": "1"}}},
     "no.such.property"),
    ("a bad Kafka property value", {"kafka": {"properties": {"message.max.bytes": "lots"}}},
     "message.max.bytes"),
    ("auto commit", {"kafka": {"properties": {"enable.auto.commit": "true"}}},
     "enable.auto.commit"),
]


def _fill(v, port):
    if isinstance(v, dict):
        return {k: _fill(x, port) for k, x in v.items()}
    return v.replace("{p}", str(port)) if isinstance(v, str) else v


@pytest.mark.parametrize("what,overrides,names", BAD, ids=[b[0] for b in BAD])
def test_check_refuses_what_the_service_refuses(sink_factory_offline, what, overrides, names):
    overrides = _fill(overrides, harness.free_port())
    conf = sink_factory_offline.write_config(**COMMON, overrides=overrides, name="bad")
    r = harness.run_cli("check", "-c", str(conf))
    assert r.returncode == 2, f"check accepted {what}: {r.stdout}{r.stderr}"
    assert names in r.stdout + r.stderr, r.stdout + r.stderr
    # and the service refuses it the same way, at once, before touching anything
    t0 = time.monotonic()
    r2 = harness.run_cli("-c", str(conf), timeout=30)
    assert r2.returncode == 2, f"the service: {r2.returncode} {r2.stdout}{r2.stderr}"
    assert names in r2.stdout + r2.stderr
    assert time.monotonic() - t0 < harness.scaled(10)


def test_check_accepts_the_listen_forms_the_service_takes(sink_factory_offline):
    p1, p2 = harness.free_port(), harness.free_port()
    for listen in (f"127.0.0.1:{p1}", f"localhost:{p1}", f"[::1]:{p1}", f"127.0.0.2:{p1}"):
        conf = sink_factory_offline.write_config(
            **COMMON, overrides={"http": {"listen": listen},
                                 "metrics": {"listen": f"127.0.0.1:{p2}"}}, name="good")
        r = harness.run_cli("check", "-c", str(conf))
        assert r.returncode == 0, f"{listen}: {r.stdout}{r.stderr}"
