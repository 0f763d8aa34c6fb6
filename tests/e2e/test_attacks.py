"""Attacks on every entry point of the operator API (issue 7, part 2).

Every endpoint of src/api_routes.c, src/api_replay.c, src/api_webhook.c and
src/api_status.c is hit with missing, wrong, viewer-role and other-tenant tokens, with SQL
metacharacters in every query parameter, path segment and body field, with huge headers
and bodies, with hundreds of idle connections, and with forged or replayed webhook
signatures. Each refusal must carry the right status and leave the database as it was
(a snapshot of the table counts and of the DLQ and job statuses is compared); nothing
may answer 500, and the service must go on answering everyone else.

Policy sandbox escapes are attacks too; they are covered by
tests/e2e/test_policies.py::test_sandbox_escapes_end_in_the_dlq (not repeated here).
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
from urllib.parse import quote

import pytest

import harness
from apihelpers import (ACME_TOKEN, OPS_TOKEN, TOKENS, VIEWER_TOKEN, Api, api_for, describe,
                        error_json, listen_address, ok_json, wait_job, wait_journal_at)
from harness import event_records, make_event, query, scalar, wait_rows
from policyhelpers import post_webhook, signed_request

JOURNAL_COUNT = "SELECT count(*) FROM event_journal"
DLQ_COUNT = "SELECT count(*) FROM dead_letter_queue"
SECRET = "whsec-attacks-0123456789"
MAX_BODY = 65536

# tenant from the payload; spam.detected goes to the DLQ with its tenant (so that DLQ
# entries belong to a tenant and tenant scopes apply to them)
SPAM_POLICY = """
local null = sink.json.null
return {
  describe = function(ev)
    local p = ev.payload
    if type(p) ~= "table" then return nil, nil end
    local t = p.event_type
    if t == null then t = nil end
    local tenant = p.tenant_id
    if tenant == null then tenant = nil end
    return tenant, t
  end,
  route = function(ev, info)
    if info.tenant_id == nil then return "dlq", "missing_tenant" end
    if info.event_type == "spam.detected" then return "dlq", "policy_route" end
    return nil
  end,
}
"""

# Every route of the route tables (src/api_*.c: api_routes.c, api_replay.c, api_webhook.c,
# api_status.c), read from the source so that a new endpoint is attacked too, as (method,
# path template, open). {e} is an event id, {d} a DLQ entry id, {j} a replay job id: filled
# with an object of the tenant under test.
_ROUTE = re.compile(r'\{"(GET|POST|PUT|PATCH|DELETE)", "(/[^"]*)", (true|false), \w+[,}]')
_ID_KIND = (("/events/{id}", "/events/{e}"), ("/dlq/{id}", "/dlq/{d}"),
            ("/replay/jobs/{id}", "/replay/jobs/{j}"), ("/replay/{id}", "/replay/{e}"))


def _routes_from_source() -> list[tuple[str, str, bool]]:
    out = []
    for f in sorted((harness.REPO / "src").glob("api_*.c")):
        for m in _ROUTE.finditer(f.read_text()):
            path = m.group(2)
            for a, b in _ID_KIND:
                path = path.replace(a, b)
            out.append((m.group(1), path.replace("{id}", "{e}"), m.group(3) == "true"))
    return out


ROUTES = _routes_from_source()
# CONTRACT section 2 (and the README): only these answer without a bearer token
OPEN_ROUTES = {("GET", "/health"), ("GET", "/ready"), ("GET", "/"), ("POST", "/webhooks/replay")}
PROTECTED = [(m, p) for m, p, open_ in ROUTES if not open_]

# SQL metacharacters and friends, for every parameter, path segment and body field
INJECTIONS = [
    "' OR 1=1 --",
    "1; DROP TABLE event_journal",
    "1'; DROP TABLE event_journal; --",
    "%00",
    "acme\x00' OR '1'='1",
    "\u2019 OR \u20181\u2019=\u20181",      # unicode quotes
    "\uff07 OR 1=1 --",                    # fullwidth apostrophe
    "\" OR \"\"=\"",
    "1 UNION SELECT token FROM pg_authid --",
    "$1::text",
    "\\x27",
    "acme%' OR tenant_id LIKE '%",
    "{\"$ne\": null}",
    "x" * 5000,
]
BAD_UTF8_QUERY = "%C0%27%FF%FE"  # an overlong quote and stray bytes, percent-encoded


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------

SNAPSHOT_SQL = """
SELECT (SELECT count(*) FROM event_journal),
       (SELECT count(*) FROM dead_letter_queue),
       (SELECT count(*) FROM replay_jobs),
       (SELECT count(*) FROM replay_job_items),
       (SELECT md5(coalesce(string_agg(id || ':' || status || ':' || attempts, ','
                                       ORDER BY id), '')) FROM dead_letter_queue),
       (SELECT md5(coalesce(string_agg(id || ':' || status || ':' || succeeded || ':' || failed,
                                       ',' ORDER BY id), '')) FROM replay_jobs),
       (SELECT count(*) FROM webhook_signatures),
       (SELECT count(*) FROM replay_idempotency),
       (SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename IN
         ('event_journal', 'dead_letter_queue', 'replay_jobs', 'replay_job_items',
          'webhook_signatures', 'replay_idempotency', 'schedule_runs', 'schema_migrations'))
"""
SNAPSHOT_NAMES = ("journal rows", "DLQ rows", "replay jobs", "replay job items",
                  "DLQ status checksum", "job status checksum", "webhook signatures",
                  "idempotency keys", "tables present")


def snapshot(dsn: str) -> tuple:
    return tuple(query(dsn, SNAPSHOT_SQL)[0])


def assert_unchanged(dsn: str, before: tuple, what: str) -> None:
    after = snapshot(dsn)
    if after != before:
        diff = {n: (a, b) for n, a, b in zip(SNAPSHOT_NAMES, before, after) if a != b}
        raise AssertionError(f"{what} changed the database: {diff}")


class World:
    """One service with tokens and a webhook secret, events of two tenants, a DLQ entry of
    each, a replay job of each scope."""

    def __init__(self, kafka, db, topic, sink, tmp_path, **over):
        policy = tmp_path / "spam.lua"
        policy.write_text(SPAM_POLICY)
        overrides = {"http": {"tokens": TOKENS, "max_body_bytes": MAX_BODY},
                     "webhooks": {"secret": SECRET, "tolerance_s": 300}}
        overrides = harness.deep_merge(overrides, over)
        self.db, self.topic = db, topic
        self.s = sink(topics=[topic], dsn=db, policies=[str(policy)], overrides=overrides)
        self.anon = api_for(self.s)
        self.ops = api_for(self.s, OPS_TOKEN)
        self.acme = api_for(self.s, ACME_TOKEN)
        self.viewer = api_for(self.s, VIEWER_TOKEN)
        events = ([make_event(i, tenant="acme") for i in range(10)]
                  + [make_event(100 + i, tenant="globex") for i in range(10)]
                  + [make_event(200, tenant="acme", event_type="spam.detected"),
                     make_event(201, tenant="globex", event_type="spam.detected")])
        kafka.produce(topic, event_records(events))
        wait_rows(db, JOURNAL_COUNT, 20, sinks=[self.s])
        wait_rows(db, DLQ_COUNT, 2, sinks=[self.s])
        ids = lambda t: [r[0] for r in query(  # noqa: E731
            db, "SELECT id FROM event_journal WHERE tenant_id = %s ORDER BY id", (t,))]
        self.acme_ids, self.globex_ids = ids("acme"), ids("globex")
        dlq = {t: i for i, t in query(db, "SELECT id, tenant_id FROM dead_letter_queue")}
        self.dlq_acme, self.dlq_globex = dlq["acme"], dlq["globex"]
        # a job only the unscoped tokens see, and one the acme token sees
        j = ok_json(self.ops.post(f"/replay/{self.globex_ids[0]}"), 202)
        wait_journal_at(db, j["kafka"]["topic"], j["kafka"]["partition"], j["kafka"]["offset"],
                        sinks=[self.s])
        self.job_ops = j["job_id"]
        j = ok_json(self.acme.post(f"/replay/{self.acme_ids[0]}"), 202)
        wait_journal_at(db, j["kafka"]["topic"], j["kafka"]["partition"], j["kafka"]["offset"],
                        sinks=[self.s])
        self.job_acme = j["job_id"]
        wait_rows(db, JOURNAL_COUNT, 22, sinks=[self.s])

    def path(self, template: str, tenant: str = "acme") -> str:
        if tenant == "acme":
            e, d, j = self.acme_ids[1], self.dlq_acme, self.job_acme
        else:
            e, d, j = self.globex_ids[1], self.dlq_globex, self.job_ops
        return template.format(e=e, d=d, j=j)

    def listen(self) -> tuple[str, int]:
        host, port = listen_address(self.s, "http").rsplit(":", 1)
        return host, int(port)


def valid_body(method: str, template: str, w: World) -> dict | None:
    """A body that would be accepted, so that a refusal is about the token only."""
    if template == "/replay/batch":
        return {"ids": [w.acme_ids[2]], "reason": "attack"}
    if template == "/replay/range":
        return {"start": "2000-01-01T00:00:00Z", "end": "2100-01-01T00:00:00Z",
                "confirm": True, "rate_per_s": 1}
    if template == "/dlq/retry":
        return {"reason": "policy_route"}
    return {} if method == "POST" else None


def raw_request(host: str, port: int, data: bytes, source: str | None = None,
                timeout: float = 20) -> bytes:
    """Sends raw bytes and returns whatever comes back until the server closes or goes
    quiet (b"" when it closed at once; ECONNRESET counts as closed)."""
    s = socket.create_connection((host, port), timeout=timeout,
                                 source_address=(source, 0) if source else None)
    out = b""
    try:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            out += chunk
            if b"\r\n\r\n" in out and _complete(out):
                break
    finally:
        s.close()
    return out


def _complete(resp: bytes) -> bool:
    head, _, body = resp.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            return len(body) >= int(v.strip())
    return False


def status_of(resp: bytes) -> int | None:
    if not resp.startswith(b"HTTP/1."):
        return None
    return int(resp.split(b" ", 2)[1])


def health_from(host: str, port: int, source: str, timeout: float = 10) -> int | str:
    """GET /health from a given loopback source address: the status, or the error."""
    c = http.client.HTTPConnection(host, port, timeout=timeout, source_address=(source, 0))
    try:
        c.request("GET", "/health")
        return c.getresponse().status
    except (OSError, http.client.HTTPException) as e:
        return type(e).__name__
    finally:
        c.close()


# --------------------------------------------------------------------------------------
# 1. tokens: missing, wrong, viewer, other tenant -- on every endpoint
# --------------------------------------------------------------------------------------

BAD_AUTH = [
    None,                                   # no header at all
    "Bearer not-a-token",
    f"Bearer {OPS_TOKEN}x",
    f"Bearer {OPS_TOKEN[:-1]}",
    f"Bearer {OPS_TOKEN.upper()}",
    f"Bearer  {OPS_TOKEN}",                 # two spaces: the token is " ops-token-123"
    f"Bearer {OPS_TOKEN} ",
    "Bearer ",
    "Bearer",
    OPS_TOKEN,                              # no scheme
    f"Basic {OPS_TOKEN}",
    f"Token {OPS_TOKEN}",
    "Bearer ' OR 1=1 --",
    "Bearer " + "A" * 8000,
]


def test_every_endpoint_refuses_bad_tokens_wrong_roles_and_other_tenants(kafka, db, topic, sink,
                                                                          tmp_path):
    assert len(ROUTES) >= 21, ROUTES
    assert {(m, p) for m, p, open_ in ROUTES if open_} == OPEN_ROUTES, ROUTES
    w = World(kafka, db, topic, sink, tmp_path)
    before = snapshot(db)
    problems: list[str] = []

    def expect(r, status, what):
        if r.status_code != status:
            problems.append(f"{what}: expected {status}, got {describe(r)}")
            return
        try:
            error_json(r, status)
        except AssertionError as e:
            problems.append(f"{what}: {e}")

    # missing or wrong tokens: 401 on every protected endpoint, for either tenant's objects
    for method, template in PROTECTED:
        for tenant in ("acme", "globex"):
            path = w.path(template, tenant)
            body = valid_body(method, template, w)
            for auth in BAD_AUTH:
                headers = {"Authorization": auth} if auth is not None else {}
                r = w.anon.request(method, path, token=None, headers=headers, json=body)
                expect(r, 401, f"{method} {path} with Authorization {str(auth)[:40]!r}")
    assert_unchanged(db, before, "requests with missing or wrong tokens")

    # the viewer may read, never write: 403 on every POST, whatever the body
    for method, template in PROTECTED:
        if method != "POST":
            continue
        for tenant in ("acme", "globex"):
            path = w.path(template, tenant)
            r = w.viewer.post(path, json=valid_body(method, template, w))
            expect(r, 403, f"viewer {method} {path}")
            r = w.viewer.post(path, data=b"{not json")
            expect(r, 403, f"viewer {method} {path} (bad body)")
    for method, template in PROTECTED:
        if method == "GET":
            r = w.viewer.get(w.path(template, "acme"))
            assert r.status_code == 200, f"viewer GET: {describe(r)}"
    assert_unchanged(db, before, "viewer writes")

    # a token bound to tenant acme: another tenant's objects do not exist for it (404)
    for method, template in PROTECTED:
        if "{" not in template:
            continue
        path = w.path(template, "globex")
        r = w.acme.request(method, path, json=valid_body(method, template, w))
        expect(r, 404, f"acme token {method} {path} (a globex object)")
    # lists and filters show nothing of globex
    assert ok_json(w.acme.get("/events/latest", params={"tenant": "globex"})) == {"events": []}
    seen = ok_json(w.acme.get("/events/latest", params={"limit": 1000}))["events"]
    assert seen and {e["tenant_id"] for e in seen} == {"acme"}
    for raw_q in ("tenant=%00", "tenant=%00globex", "tenant=globex%00", "topic=%00&tenant=%00"):
        # libmicrohttpd cuts a value at %00: the API refuses it rather than filter on half
        expect(w.acme.get("/events/latest?limit=1000&" + raw_q), 400, f"NUL in {raw_q}")
    assert ok_json(w.acme.get("/dlq", params={"tenant": "globex"})) == {"entries": []}
    assert [d["id"] for d in ok_json(w.acme.get("/dlq"))["entries"]] == [w.dlq_acme]
    assert [j["id"] for j in ok_json(w.acme.get("/replay/jobs"))["jobs"]] == [w.job_acme]
    stats = ok_json(w.acme.get("/stats"))
    assert (stats["events"]["original"], stats["events"]["replayed"]) == (10, 1), stats
    assert sum(d["count"] for d in stats["dlq"]) == 1, stats
    lineage = ok_json(w.acme.get(f"/events/{w.acme_ids[0]}/lineage"))
    assert {e["tenant_id"] for e in lineage["descendants"]} == {"acme"}
    rng = {"start": "2000-01-01T00:00:00Z", "end": "2100-01-01T00:00:00Z", "dry_run": True}
    assert ok_json(w.acme.post("/replay/range", json=dict(rng, tenant="globex")))["matched"] == 0
    assert ok_json(w.acme.post("/replay/range", json=rng))["matched"] == 10
    assert ok_json(w.acme.post("/replay/range", json=dict(rng, only_original=False)))[
        "matched"] == 11  # and the acme replay of the setup
    # the webhook endpoint takes no token: a valid operator token does not stand in for a
    # signature
    for tok in (OPS_TOKEN, ACME_TOKEN):
        expect(w.anon.post("/webhooks/replay", token=tok, json={"ids": [w.acme_ids[1]]}), 401,
               "webhook with a bearer token and no signature")
    # methods the routes do not have
    for method in ("PUT", "DELETE", "PATCH"):
        for _, template in PROTECTED:
            r = w.ops.request(method, w.path(template, "acme"))
            if r.status_code not in (404, 405):
                problems.append(f"{method} {template}: {describe(r)}")
    # path variants never reach a protected handler without a token
    for raw in ("//admin/reload", "/health/../admin/reload", "/admin/reload/", "/admin//reload",
                "/ADMIN/RELOAD", "/admin/reload%00", "/admin/reload?x=/health",
                "/health%2F..%2Fadmin%2Freload", "/events/1%2F..%2F..%2Fadmin%2Fpolicies"):
        r = w.anon.post(raw, token=None)
        if r.status_code < 400 or r.status_code >= 500:
            problems.append(f"POST {raw} without a token: {describe(r)}")
    assert_unchanged(db, before, "other-tenant requests")
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems[:40])

    # accepted, but only within the scope: the acme token's batch of globex ids and DLQ
    # retry of globex entries replay nothing of globex
    b = ok_json(w.acme.post("/replay/batch", json={"ids": w.globex_ids[:3]}), 202)
    job = wait_job(w.acme, b["job_id"], sinks=[w.s])
    assert (job["status"], job["total"], job["succeeded"], job["failed"]) == \
        ("failed", 3, 0, 3), job
    d = ok_json(w.acme.post("/dlq/retry", json={"tenant": "globex"}), 202)
    assert d["total"] == 0, d
    time.sleep(1)
    assert scalar(db, "SELECT count(*) FROM event_journal WHERE tenant_id = 'globex' AND "
                      "replay_count > 0") == 1  # the ops replay of the setup only
    assert scalar(db, "SELECT status FROM dead_letter_queue WHERE id = %s",
                  (w.dlq_globex,)) == "pending"
    assert w.s.alive()


# --------------------------------------------------------------------------------------
# 2. SQL metacharacters in every parameter, path segment and body field
# --------------------------------------------------------------------------------------

def _never_500(problems, r, what, allowed):
    if r.status_code not in allowed:
        problems.append(f"{what}: {describe(r)}")
        return False
    if r.status_code >= 400:
        try:
            error_json(r, r.status_code)
        except AssertionError as e:
            problems.append(f"{what}: {e}")
    return True


def test_sql_metacharacters_everywhere_are_data_not_code(kafka, db, topic, sink, tmp_path):
    w = World(kafka, db, topic, sink, tmp_path)
    ops = w.ops
    before = snapshot(db)
    problems: list[str] = []
    rng_ok = {"start": "2000-01-01T00:00:00Z", "end": "2100-01-01T00:00:00Z"}

    for inj in INJECTIONS:
        # query parameters of the read endpoints: 400 or a correct (empty) answer
        for param in ("tenant", "topic"):
            r = ops.get("/events/latest", params={param: inj})
            if _never_500(problems, r, f"/events/latest?{param}={inj[:30]!r}", (200, 400)) \
                    and r.status_code == 200:
                got = r.json()["events"]
                # a NUL ends the C string: "acme\0..." filters on "acme", "%00" is literal
                want = [] if "\x00" not in inj else None
                if want is not None and got != want:
                    problems.append(f"/events/latest?{param}={inj[:30]!r} returned "
                                    f"{len(got)} events")
        for param in ("limit", "replayed"):
            _never_500(problems, ops.get("/events/latest", params={param: inj}),
                       f"/events/latest?{param}={inj[:30]!r}", (400,))
        for param in ("reason", "topic", "tenant"):
            r = ops.get("/dlq", params={param: inj})
            if _never_500(problems, r, f"/dlq?{param}={inj[:30]!r}", (200, 400)) \
                    and r.status_code == 200 and "\x00" not in inj and r.json()["entries"]:
                problems.append(f"/dlq?{param}={inj[:30]!r} returned entries")
        for param in ("window_s", "bin_s"):
            _never_500(problems, ops.get("/stats", params={param: inj}),
                       f"/stats?{param}={inj[:30]!r}", (400,))
        for param in ("status", "limit"):
            _never_500(problems, ops.get("/dlq", params={param: inj}),
                       f"/dlq?{param}={inj[:30]!r}", (400,))
            _never_500(problems, ops.get("/replay/jobs", params={param: inj}),
                       f"/replay/jobs?{param}={inj[:30]!r}", (400,))
        # path segments
        seg = quote(inj, safe="")
        for method, template in PROTECTED:
            if "{" not in template:
                continue
            path = template.replace("{e}", seg).replace("{d}", seg).replace("{j}", seg)
            r = ops.request(method, path, json={} if method == "POST" else None)
            # a NUL (%00) ends the path: "/dlq/acme\0.../retry" is routed as /dlq/acme
            _never_500(problems, r, f"{method} {template} with {inj[:30]!r}",
                       (400, 404, 405) if "\x00" in inj else (400, 404))
        # body fields of the write endpoints that must refuse them
        for body in ({"ids": [inj]}, {"ids": inj}, {"ids": [w.acme_ids[1]], "rate_per_s": inj},
                     {"ids": [w.acme_ids[1]], "reason": 12}):
            _never_500(problems, ops.post("/replay/batch", json=body),
                       f"/replay/batch {json.dumps(body)[:60]}", (400,))
        for key in ("start", "end"):
            body = dict(rng_ok, dry_run=True, **{key: inj})
            _never_500(problems, ops.post("/replay/range", json=body),
                       f"/replay/range {key}={inj[:30]!r}", (400,))
            _never_500(problems, ops.post("/replay/range", params={**rng_ok, key: inj,
                                                                   "dry_run": "true"}),
                       f"/replay/range?{key}={inj[:30]!r}", (400,))
        for key in ("only_original", "dry_run", "confirm", "rate_per_s"):
            _never_500(problems, ops.post("/replay/range", json=dict(rng_ok, **{key: inj})),
                       f"/replay/range {key}={inj[:30]!r}", (400,))
        for key in ("topic", "tenant"):
            r = ops.post("/replay/range", json=dict(rng_ok, dry_run=True, **{key: inj}))
            if _never_500(problems, r, f"/replay/range {key}={inj[:30]!r}", (200, 400)) \
                    and r.status_code == 200 and "\x00" not in inj and r.json()["matched"]:
                problems.append(f"/replay/range {key}={inj[:30]!r} matched {r.json()}")
        r = ops.post("/replay/range", json=dict(rng_ok, dry_run=True, reason=inj))
        if _never_500(problems, r, f"/replay/range reason={inj[:30]!r}",
                      (400,) if "\x00" in inj else (200,)) and r.status_code == 200 and \
                r.json()["matched"] != 20:
            problems.append(f"/replay/range reason={inj[:30]!r}: {r.json()}")
        _never_500(problems, ops.post("/dlq/retry", json={"rate_per_s": inj}),
                   f"/dlq/retry rate_per_s={inj[:30]!r}", (400,))
        # headers
        r = ops.post("/replay/99999999", headers={"Idempotency-Key": inj.encode("utf-8")})
        _never_500(problems, r, f"Idempotency-Key {inj[:30]!r}", (400, 404))
        for hdr in ("X-Eventsink-Timestamp", "X-Eventsink-Signature"):
            body, headers = signed_request(SECRET, {"ids": [w.acme_ids[1]]})
            headers[hdr] = inj.encode("utf-8")
            _never_500(problems, post_webhook(w.anon, body, headers),
                       f"webhook {hdr}: {inj[:30]!r}", (400, 401))
    # bytes that are not UTF-8, in a query parameter and in a path segment
    for path in (f"/events/latest?tenant={BAD_UTF8_QUERY}", f"/dlq?reason={BAD_UTF8_QUERY}",
                 f"/events/{BAD_UTF8_QUERY}"):
        _never_500(problems, ops.get(path), path, (200, 400, 404))
    # bodies that are not JSON: refused by every endpoint that reads one
    for raw in (b"' OR 1=1 --", b'{"ids": [1] --}', b"\x00", b'{"a":' * 5000, b"[" * 60000,
                b'{"ids": [1]} ; DROP TABLE event_journal', b"\xef\xbb\xbf{}"):
        for path in ("/replay/batch", "/replay/range", "/dlq/retry", f"/replay/{w.acme_ids[1]}",
                     f"/dlq/{w.dlq_acme}/retry"):
            r = ops.post(path, data=raw, headers={"Content-Type": "application/json"})
            _never_500(problems, r, f"POST {path} body {raw[:30]!r}", (400,))
    # JSON whose ids are not event ids
    for raw in (b'{"ids": ["\xff\xfe"]}', b'{"ids": [1e400]}', b'{"ids": [-1]}',
                b'{"ids": [1.5]}', b'{"ids": [99999999999999999999999]}',
                b'{"ids": [1], "ids": ["x"]}', b'{"ids": [[1]]}', b'{"ids": [{"$gt": 0}]}'):
        r = ops.post("/replay/batch", data=raw, headers={"Content-Type": "application/json"})
        _never_500(problems, r, f"POST /replay/batch body {raw[:30]!r}", (400,))
    # strings that are not UTF-8 (or hold \u0000) in body fields
    for raw in (b'{"reason": "\xc0\x27 OR 1=1"}', b'{"reason": "a\\u0000b"}'):
        for path in ("/dlq/retry", f"/replay/{w.acme_ids[1]}", f"/dlq/{w.dlq_acme}/retry"):
            r = ops.post(path, data=raw, headers={"Content-Type": "application/json"})
            _never_500(problems, r, f"POST {path} body {raw[:40]!r}", (400,))
    for raw in (b'{"tenant": "\xff\xfe"}', b'{"topic": "\xc0\x27"}', b'{"reason": "\xed\xa0\x80"}'):
        r = ops.post("/dlq/retry", data=raw, headers={"Content-Type": "application/json"})
        _never_500(problems, r, f"POST /dlq/retry body {raw[:40]!r}", (400,))
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems[:40])
    assert_unchanged(db, before, "refused injection attempts")

    # accepted requests carry the metacharacters as data: stored as sent, run nothing
    jobs_before = scalar(db, "SELECT count(*) FROM replay_jobs")
    reasons = [inj for inj in INJECTIONS if "\x00" not in inj]
    for inj in reasons:
        b = ok_json(ops.post("/replay/batch", json={"ids": [w.acme_ids[3]], "reason": inj}), 202)
        assert scalar(db, "SELECT reason FROM replay_jobs WHERE id = %s", (b["job_id"],)) == inj
        d = ok_json(ops.post("/dlq/retry", json={"reason": inj, "tenant": inj, "topic": inj}), 202)
        assert d["total"] == 0, d
        g = ok_json(ops.post("/replay/range", json=dict(rng_ok, tenant=inj, confirm=True)), 202)
        assert g["matched"] == 0, g
    for jid in [r[0] for r in query(db, "SELECT id FROM replay_jobs WHERE id > %s",
                                    (max(w.job_ops, w.job_acme),))]:
        wait_job(ops, jid, sinks=[w.s])
    wait_rows(db, "SELECT count(*) FROM event_journal WHERE replayed_from_event_id = %d"
              % w.acme_ids[3], len(reasons), sinks=[w.s])
    assert scalar(db, "SELECT count(*) FROM replay_jobs") == jobs_before + 3 * len(reasons)
    after = snapshot(db)
    assert after[8] == before[8], "a table is gone"
    assert after[1] == before[1], "DLQ rows changed"
    assert after[4] == before[4], "DLQ statuses changed"
    assert scalar(db, JOURNAL_COUNT) == before[0] + len(reasons)
    assert w.s.alive()


# --------------------------------------------------------------------------------------
# 3. huge headers and bodies
# --------------------------------------------------------------------------------------

def test_huge_headers_and_bodies_are_refused_without_harming_others(kafka, db, topic, sink,
                                                                    tmp_path):
    w = World(kafka, db, topic, sink, tmp_path)
    host, port = w.listen()
    before = snapshot(db)
    auth = f"Authorization: Bearer {OPS_TOKEN}\r\n".encode()
    results: dict[str, object] = {}
    stop = threading.Event()
    health: list = []

    def bystander():  # a normal client from another loopback address, all along
        while not stop.is_set():
            health.append(health_from(host, port, "127.0.0.2"))
            time.sleep(0.05)
    t = threading.Thread(target=bystander, daemon=True)
    t.start()
    try:
        # a 100 KB header, and 100 headers of 1 KB: over the connection's 64 KB of memory
        big = b"X-Big: " + b"a" * 100_000 + b"\r\n"
        many = b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 1000) for i in range(100))
        for name, extra in (("100 KB header", big), ("100 headers of 1 KB", many),
                            ("100 KB cookie", b"Cookie: " + b"c=" * 50_000 + b"\r\n")):
            resp = raw_request(host, port, b"GET /events/latest HTTP/1.1\r\nHost: x\r\n" + auth
                               + extra + b"\r\n")
            results[name] = status_of(resp)
        # a 100 KB request line
        resp = raw_request(host, port, b"GET /events/latest?tenant=" + b"q" * 100_000
                           + b" HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n")
        results["100 KB URL"] = status_of(resp)
        # bodies over http.max_body_bytes: announced, chunked, and a lying Content-Length
        body = json.dumps({"ids": [w.acme_ids[1]], "reason": "r" * (2 * MAX_BODY)}).encode()
        r = w.ops.post("/replay/batch", data=body, headers={"Content-Type": "application/json"})
        results["Content-Length over the limit"] = r.status_code
        error_json(r, 413, "body_too_large")

        def chunks():
            for i in range(0, len(body), 4096):
                yield body[i:i + 4096]
        r = w.ops.post("/replay/batch", data=chunks(), headers={"Content-Type": "application/json"})
        results["chunked over the limit"] = r.status_code
        error_json(r, 413, "body_too_large")
        r = w.ops.post("/replay/batch", data=(b"x" * 65536 for _ in range(80)))  # 5 MiB chunked
        results["5 MiB chunked"] = r.status_code
        error_json(r, 413, "body_too_large")
        resp = raw_request(host, port, b"POST /replay/batch HTTP/1.1\r\nHost: x\r\n" + auth
                           + b"Content-Length: 1000000000000000\r\n\r\n{}")
        results["Content-Length 10^15"] = status_of(resp)
        resp = raw_request(host, port, b"POST /replay/batch HTTP/1.1\r\nHost: x\r\n" + auth
                           + b"Content-Length: -5\r\n\r\n{}")
        results["Content-Length -5"] = status_of(resp)
        resp = raw_request(host, port, b"POST /replay/batch HTTP/1.1\r\nHost: x\r\n" + auth
                           + b"Transfer-Encoding: chunked\r\n\r\nzzzz\r\n" + b"y" * 100 + b"\r\n")
        results["bad chunk size"] = status_of(resp)
        # the limit applies before the token check too: no token, huge body
        r = w.anon.post("/replay/batch", token=None, data=body)
        results["no token, over the limit"] = r.status_code
        # and a body at the limit still works
        ok_body = json.dumps({"ids": [w.acme_ids[1]], "reason": "r" * (MAX_BODY - 200)}).encode()
        assert len(ok_body) <= MAX_BODY
        r = w.ops.post("/replay/range", data=json.dumps(
            {"start": "2000-01-01T00:00:00Z", "end": "2100-01-01T00:00:00Z", "dry_run": True,
             "reason": "r" * (MAX_BODY - 200)}).encode())
        assert r.status_code == 200, describe(r)
    finally:
        stop.set()
        t.join(30)
    print("huge inputs:", results)
    assert results["100 KB header"] in (None, 400, 413, 414, 431), results
    assert results["100 headers of 1 KB"] in (None, 400, 413, 414, 431), results
    assert results["100 KB cookie"] in (None, 400, 413, 414, 431), results
    assert results["100 KB URL"] in (None, 400, 413, 414, 431), results
    assert results["Content-Length 10^15"] in (None, 413), results
    assert results["Content-Length -5"] in (None, 400, 413), results
    assert results["bad chunk size"] in (None, 400), results
    assert results["no token, over the limit"] in (401, 413), results
    bad = [h for h in health if h != 200]
    assert health and not bad, f"the bystander got {len(bad)} failures of {len(health)}: {bad[:5]}"
    assert ok_json(w.ops.get("/health"))["status"] == "ok"
    assert_unchanged(db, before, "huge requests")


# --------------------------------------------------------------------------------------
# 4. many idle connections
# --------------------------------------------------------------------------------------

def _open_idle(host, port, n, sources):
    socks, refused = [], 0
    for i in range(n):
        src = sources[i % len(sources)]
        try:
            s = socket.create_connection((host, port), timeout=5, source_address=(src, 0))
            socks.append(s)
        except OSError:
            refused += 1
    return socks, refused


def _closed_by_server(socks, wait: float = 0.5) -> int:
    """How many of the sockets the server has closed (EOF or reset)."""
    n = 0
    for s in socks:
        s.settimeout(wait)
        try:
            if s.recv(1) == b"":
                n += 1
        except socket.timeout:
            pass
        except OSError:
            n += 1
    return n


def _fds(pid: int) -> int:
    import os
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_idle_connections_are_bounded_per_address_and_in_all(kafka, db, topic, sink, tmp_path):
    """http.max_connections 512, http.max_connections_per_ip 64, http.request_timeout_s 10
    (src/http.c, src/http_guard.c). What happens, measured:
    - one address opening 300 idle sockets gets at most 64 of them accepted (the rest are
      closed at once); every other address is still answered, the flooding one is not;
    - idle sockets are closed by the server after about 10 s (the request deadline);
    - 300 idle sockets from 5 addresses are held (the server's open file descriptors say
      so), and a client from a 6th address is still answered (tests/e2e/
      test_slow_clients.py: past 7/8 of the limit newcomers close the oldest idle ones);
    - the metrics listener is a daemon of its own and answers throughout;
    - once the idle sockets go, everybody is served again at once."""
    w = World(kafka, db, topic, sink, tmp_path)
    host, port = w.listen()
    mhost, mport = listen_address(w.s, "metrics").rsplit(":", 1)
    base_fds = _fds(w.s.pid)

    def metrics_ok():
        mc = http.client.HTTPConnection(mhost, int(mport), timeout=10)
        try:
            mc.request("GET", "/metrics")
            return mc.getresponse().status == 200
        finally:
            mc.close()

    # one address, 300 idle sockets (bounded: all are closed at the end)
    socks, refused = _open_idle(host, port, 300, ["127.0.0.1"])
    try:
        time.sleep(1)
        server_fds = _fds(w.s.pid) - base_fds
        closed = _closed_by_server(socks, 0.05)
        held = len(socks) - closed
        print(f"300 idle sockets from one address: {held} held open, {closed} closed at once, "
              f"{refused} refused; the server holds {server_fds} more fds")
        assert held <= 64, f"the per-address limit (64) did not hold: {held} idle sockets open"
        assert server_fds <= 64 + 8, f"the server holds {server_fds} more fds"
        # everyone else is still served, and the same address is not
        for _ in range(5):
            assert health_from(host, port, "127.0.0.2") == 200
        same = health_from(host, port, "127.0.0.1", timeout=5)
        print(f"a request from the flooding address itself: {same}")
        assert same != 200
        assert metrics_ok()
        # the idle ones are closed after http.request_timeout_s
        t0 = time.monotonic()
        open_ones = [s for s in socks if s.fileno() >= 0]

        def all_closed():
            return _closed_by_server(open_ones, 0.01) >= len(open_ones)
        harness.wait_for(all_closed, 60, interval=1, what="the server to close idle sockets")
        took = time.monotonic() - t0 + 1
        print(f"idle sockets closed by the server after {took:.0f} s")
        assert took <= 20
        assert health_from(host, port, "127.0.0.1") == 200
    finally:
        for s in socks:
            s.close()

    # several addresses, more than the old limit of 256 in all
    sources = [f"127.0.0.{i}" for i in range(10, 15)]
    socks, refused = _open_idle(host, port, 5 * 60, sources)
    try:
        time.sleep(1)
        server_fds = _fds(w.s.pid) - base_fds
        other = health_from(host, port, "127.0.0.3", timeout=5)
        print(f"300 idle sockets from 5 addresses: the server holds {server_fds} more fds, "
              f"{refused} refused; a client from a 6th address got {other}")
        assert server_fds <= 300 + 8, f"the server holds {server_fds} more fds"
        assert other == 200, f"a client from a 6th address got {other}"
        assert metrics_ok(), "the metrics listener suffered"
    finally:
        for s in socks:
            s.close()
    # once they go, everybody is served again at once
    harness.wait_for(lambda: health_from(host, port, "127.0.0.3") == 200, 10,
                     what="the API to answer again")
    assert w.s.alive()
    assert ok_json(w.ops.get("/events/latest", params={"limit": 1}))["events"]


# --------------------------------------------------------------------------------------
# 5. webhooks: replayed, stale and forged signatures
# --------------------------------------------------------------------------------------

def test_webhook_signatures_are_single_use_fresh_and_secret(kafka, db, topic, sink, tmp_path):
    w = World(kafka, db, topic, sink, tmp_path)
    # a second instance on the same database: a signature used on one is used on both
    w2 = sink(topics=[topic], dsn=db, group_id=sink.group_id, overrides={
        "http": {"tokens": TOKENS}, "webhooks": {"secret": SECRET, "tolerance_s": 300}})
    other = api_for(w2)
    body, headers = signed_request(SECRET, {"ids": [w.acme_ids[4]]})
    first = ok_json(post_webhook(w.anon, body, headers), 202)
    wait_job(w.ops, first["job_id"], sinks=[w.s])
    # a job is done once Kafka has its event; the journal row comes a moment later
    wait_rows(db, JOURNAL_COUNT, 23, sinks=[w.s])
    before = snapshot(db)

    # the same request again, here and on the other instance: 409, no job
    error_json(post_webhook(w.anon, body, headers), 409, "replayed_signature")
    error_json(post_webhook(other, body, headers), 409, "replayed_signature")
    assert_unchanged(db, before, "a replayed signature")
    # the same signature on another body: the signature no longer matches (401)
    error_json(post_webhook(w.anon, json.dumps({"ids": [w.acme_ids[5]]}).encode(), headers), 401)
    # stale and future timestamps, correctly signed
    for skew in (-301, -3600, 301, 86400 * 365):
        b, h = signed_request(SECRET, {"ids": [w.acme_ids[5]]}, ts=int(time.time()) + skew)
        error_json(post_webhook(w.anon, b, h), 401, "unauthorized")
    # wrong secrets, truncated or malformed signatures, missing headers
    for secret in ("not-the-secret", SECRET[:-1], SECRET + " ", ""):
        if not secret:
            continue
        b, h = signed_request(secret, {"ids": [w.acme_ids[5]]})
        error_json(post_webhook(w.anon, b, h), 401, "unauthorized")
    b, h = signed_request(SECRET, {"ids": [w.acme_ids[5]]})
    for sig in (h["X-Eventsink-Signature"][:-2], h["X-Eventsink-Signature"].upper(),
                h["X-Eventsink-Signature"].replace("sha256=", "sha1="),
                h["X-Eventsink-Signature"].replace("sha256=", ""), "sha256=" + "0" * 64,
                "sha256=" + "zz" * 32, h["X-Eventsink-Signature"] + "00"):
        error_json(post_webhook(w.anon, b, dict(h, **{"X-Eventsink-Signature": sig})), 401)
    for missing in ("X-Eventsink-Timestamp", "X-Eventsink-Signature"):
        error_json(post_webhook(w.anon, b, {k: v for k, v in h.items() if k != missing}), 401)
    for ts in ("", "abc", "1e9", "-1", "0", "+" + h["X-Eventsink-Timestamp"],
               h["X-Eventsink-Timestamp"] + ".0", "9" * 30):
        error_json(post_webhook(w.anon, b, dict(h, **{"X-Eventsink-Timestamp": ts})), 401)
    assert_unchanged(db, before, "refused webhooks")
    # the correctly signed request still works once
    got = ok_json(post_webhook(w.anon, b, h), 202)
    wait_job(w.ops, got["job_id"], sinks=[w.s])
    error_json(post_webhook(other, b, h), 409)
    assert scalar(db, "SELECT count(*) FROM replay_jobs WHERE kind = 'webhook'") == 2

    # one signed request sent eight times at once, to both instances: the signature is
    # recorded in the transaction of its job, so exactly one job and seven 409s
    b8, h8 = signed_request(SECRET, {"ids": [w.acme_ids[6]]})
    answers: list = []

    def send(api):
        answers.append(post_webhook(api, b8, h8))

    threads = [threading.Thread(target=send, args=(w.anon if i % 2 else other,))
               for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(harness.scaled(60))
    codes = sorted(r.status_code for r in answers)
    assert codes == [202] + [409] * 7, codes
    for r in answers:
        if r.status_code == 409:
            error_json(r, 409, "replayed_signature")
    assert scalar(db, "SELECT count(*) FROM replay_jobs WHERE kind = 'webhook'") == 3


# --------------------------------------------------------------------------------------
# 6. resource bounds under a flood: the consumer backlog, the replay rate
# --------------------------------------------------------------------------------------

def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _flood(kafka, topic, n: int, start: int, sample) -> None:
    """Produces n events of ~2.3 KB, calling sample() between chunks."""
    pad = "p" * 2000
    p = kafka.producer(**{"linger.ms": 50, "batch.size": 1_000_000})
    for c in range(0, n, 5000):
        recs = []
        for i in range(start + c, start + min(n, c + 5000)):
            ev = make_event(i)
            ev["data"]["pad"] = pad
            recs.append((None, json.dumps(ev).encode(), None, None))
        kafka.produce(topic, recs, producer=p)
        sample()


def test_a_flood_while_postgres_is_down_or_stuck_is_held_within_the_fetch_queue(
        kafka, pg, db, topic, sink):
    """A backlog cannot grow the process without bound. PostgreSQL down: the batch is held,
    the partitions are paused, nothing more is fetched. PostgreSQL stuck (a lock holds the
    journal's write): librdkafka prefetches at most queued.max.messages.kbytes (set in
    src/consumer.c; 16 MiB at the time of writing, the bound below allows 64 MiB).
    Each time ~100 MB are produced meanwhile, and all of it lands once PostgreSQL is back."""
    s = sink(topics=[topic], dsn=db, allow_errors=True)
    kafka.produce(topic, event_records([make_event(i) for i in range(100)]))
    wait_rows(db, JOURNAL_COUNT, 100, sinks=[s])
    sanitized = b"__asan_init" in harness.eventsink_bin().read_bytes()
    bound = 64 + (400 if sanitized else 100)  # the fetch queue, plus slack (ASan: quarantine)
    n = 45_000
    peaks = {}

    def watch(label: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            peaks[label] = max(peaks.get(label, 0), _rss_mib(s.pid))
            time.sleep(0.5)

    # 1. PostgreSQL down
    base = _rss_mib(s.pid)
    pg.stop("fast")
    try:
        _flood(kafka, topic, n, 1000, lambda: watch("down", 0))
        watch("down", 10)
        assert s.alive()
    finally:
        pg.start()
    wait_rows(db, JOURNAL_COUNT, 100 + n, timeout=600, sinks=[s])

    # 2. PostgreSQL up but stuck: the journal is locked, the batch's INSERT waits
    locker = harness.connect(db)
    locker.autocommit = False
    locker.execute("LOCK TABLE event_journal IN ACCESS EXCLUSIVE MODE")
    try:
        _flood(kafka, topic, n, 1000 + n, lambda: watch("stuck", 0))
        watch("stuck", 15)
        assert s.alive()
    finally:
        locker.rollback()
        locker.close()
    print(f"~{n * 2.3 / 1000:.0f} MB produced while PostgreSQL was down, then stuck: RSS "
          f"{base:.0f} MiB before, at most {peaks['down']:.0f} MiB (down) and "
          f"{peaks['stuck']:.0f} MiB (stuck)")
    for label, peak in peaks.items():
        assert peak - base < bound, f"{label}: RSS grew by {peak - base:.0f} MiB (bound {bound})"
    wait_rows(db, JOURNAL_COUNT, 100 + 2 * n, timeout=600, sinks=[s])
    assert scalar(db, DLQ_COUNT) == 0
    assert s.terminate() == 0


def test_a_client_cannot_raise_the_replay_rate_over_the_configured_cap(kafka, db, topic, sink,
                                                                       tmp_path):
    w = World(kafka, db, topic, sink, tmp_path, replay={"rate_per_s": 10})
    ids = w.acme_ids + w.globex_ids  # 20 events
    for rate in (10**6, 10**18):
        b = ok_json(w.ops.post("/replay/batch", json={"ids": ids, "rate_per_s": rate}), 202)
        job = wait_job(w.ops, b["job_id"], sinks=[w.s])
        assert job["status"] == "done" and job["succeeded"] == 20, job
        assert job["params"]["rate_per_s"] == 10, job["params"]
        row = query(db, "SELECT extract(epoch FROM finished_at - started_at) FROM replay_jobs "
                        "WHERE id = %s", (b["job_id"],))[0][0]
        assert float(row) >= 1.5, f"20 events at 10/s took {row} s"
    for rate in (0, -1, "fast", 1.5, 10**19):
        error_json(w.ops.post("/replay/batch", json={"ids": ids, "rate_per_s": rate}), 400)


# --------------------------------------------------------------------------------------
# 7. the Kafka entry point: forged replay markers
# --------------------------------------------------------------------------------------

def test_forged_replay_markers_cannot_make_an_event_vanish(kafka, db, topic, sink, tmp_path):
    """Anyone who may produce to the topic can copy the markers of an event the service
    replayed (say, a downstream system re-publishing what it received). Such a record is
    still a Kafka record: it must be kept -- journaled or dead-lettered -- exactly once."""
    w = World(kafka, db, topic, sink, tmp_path)
    job = w.job_ops
    src = w.globex_ids[0]  # the setup's replay: (job_ops, globex_ids[0]) is journaled
    assert scalar(db, "SELECT count(*) FROM event_journal WHERE replay_job_id = %s AND "
                      "replayed_from_event_id = %s", (job, src)) == 1
    ev = make_event(500, tenant="globex")
    ev.update({"_replayed_from_event_id": src, "_replay_source": "operator_api",
               "_replay_job_id": job})
    ev2 = make_event(501, tenant="globex")
    hdrs = [("x-replayed-from-event-id", str(src).encode()), ("x-replay-source", b"operator_api"),
            ("x-replay-job-id", str(job).encode())]
    positions = kafka.produce(topic, [("forged-1", json.dumps(ev).encode(), None, None),
                                      ("forged-2", json.dumps(ev2).encode(), hdrs, None)])
    from apihelpers import wait_caught_up
    wait_caught_up(kafka, sink.group_id, [topic], sinks=[w.s])
    missing = []
    for p, o in positions:
        n = scalar(db, "SELECT (SELECT count(*) FROM event_journal WHERE topic = %s AND "
                       "kafka_partition = %s AND kafka_offset = %s) + (SELECT count(*) FROM "
                       "dead_letter_queue WHERE topic = %s AND kafka_partition = %s AND "
                       "kafka_offset = %s)", (topic, p, o, topic, p, o))
        if n != 1:
            missing.append(((p, o), n))
    assert not missing, f"records stored 0 or 2 times: {missing}"
    # the markers are not eventsink's (no signature): journaled as replays of the event
    # they name, without the job's authority -- the job's own replay is untouched
    rows = query(db, "SELECT replay_verified, replay_job_id, replayed_from_event_id, replay_count"
                     " FROM event_journal WHERE topic = %s AND (kafka_partition, kafka_offset)"
                     " IN ((%s, %s), (%s, %s))", (topic, *positions[0], *positions[1]))
    assert sorted(rows) == [(False, None, src, 1)] * 2, rows
    assert scalar(db, "SELECT count(*) FROM event_journal WHERE replay_job_id = %s AND "
                      "replayed_from_event_id = %s AND replay_verified", (job, src)) == 1
    assert scalar(db, "SELECT count(*) FROM dead_letter_queue WHERE reason = "
                      "'duplicate_replay'") == 0
