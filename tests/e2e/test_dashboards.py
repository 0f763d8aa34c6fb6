"""What operators look at (issue 6): the Grafana dashboard, the replay audit queries of
docs/GRAFANA_REPLAY_QUERIES.md, the Prometheus alert rules, and the built-in status page.

One eventsink (with API tokens, a signed-webhook secret and a test policy) is fed with a
known history — originals of four tenants on three topics, replays of every source
(operator API, a policy-defined tag, webhook, automated DLQ retries, a replay of a replay),
poison messages of four reasons, a discarded and a retried DLQ entry, a slow range job
still running, a failed policy reload — while a real Prometheus scrapes it and evaluates
the alert rules. Then:

* every SQL query of the dashboard and of the document is extracted, its Grafana macros
  expanded as Grafana does, run against that PostgreSQL, and its result compared with the
  history (counts of originals vs replays, sources, DLQ by reason and status, jobs), for
  All tenants, one tenant, two tenants, and an empty time range;
* every PromQL expression (dashboard and rules) is evaluated with `promtool query instant`
  against that Prometheus and checked against what the service did; the rules load and
  evaluate without error, the alerts that should be pending or firing are, and each rule
  has unit tests (`promtool test rules`) that show it firing and staying quiet;
* the status page is loaded in headless Chromium: it asks for the token, then shows the
  numbers of the database, picks up a replay made during the test by itself, and is saved
  as a screenshot (.test/artifacts/status-page.png)."""

from __future__ import annotations

import json
import math
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

import harness
from apihelpers import (OPS_TOKEN, TOKENS, api_for, listen_address, local_url, metrics_url,
                        ok_json, error_json, replay_rows_of_job, wait_job, wait_journal_at)
from browser import Browser, chromium_path
from dashhelpers import (ALERT_TESTS, ALERTS, ALL, QUERIES_DOC, STATUS_PAGE,
                         Prometheus, alert_test_cases, dashboard_targets, data_panels, doc_blocks,
                         expand_psql, expand_sql, load_dashboard, metric_names, normalize,
                         promtool, rule_exprs)
from harness import make_event, query, query_dicts, scalar, wait_rows
from policyhelpers import RELOAD_FAILED_LOG, post_webhook, signed_request, write_policy

ARTIFACTS = harness.TEST_ROOT / "artifacts"
SECRET = "dashboards-webhook-secret"
PG_PLUGIN = "grafana-postgresql-datasource"

# ---- the history fed to the service ----------------------------------------------------
WAVES, WAVE_SIZE = 5, 10
# tenant of the i-th event of a wave on the main topic: 5 acme, 3 globex, 2 initech
WAVE_TENANTS = ["acme"] * 5 + ["globex"] * 3 + ["initech"] * 2
SIDE_EVENTS = 5          # globex events on the second topic
ARCHIVE_EVENTS = 600     # "archive" events on the third topic; a slow job replays them
SINGLE_REPLAYS = [1, 2, 3, 42]
BATCH_REPLAYS = [4, 5, 6]
WEBHOOK_REPLAYS = [7, 8]
PAGE_REPLAY = 10         # replayed while the status page is open

POISON = [  # (key, value, reason)
    ("bad-json-1", b'{"tenant_id": "acme", "event_type": "lead.created"', "invalid_json"),
    ("bad-json-2", b"plain text, not JSON", "invalid_json"),
    ("bad-utf8", b'{"tenant_id": "acme", "event_type": "x", "n": "\xff\xfe"}', "invalid_utf8"),
    ("no-tenant-1", b'{"event_type": "lead.created"}', "missing_tenant"),
    ("no-tenant-2", b'{"tenant_id": null, "event_type": "lead.created"}', "missing_tenant"),
    ("hold-1", json.dumps({"tenant_id": "acme", "event_type": "lead.created", "hold": True,
                           "seq": 1}).encode(), "policy_route"),
    ("hold-2", json.dumps({"tenant_id": "acme", "event_type": "lead.created", "hold": True,
                           "seq": 2}).encode(), "policy_route"),
]

# describe as default.lua; route holds {"hold": true} events in the DLQ (reason
# policy_route) unless they come back as a DLQ retry; dlq_retry retries those once, after
# 1 s (source "automated"); replay_source tags requests whose reason is "bulk-fix".
POLICY = """-- written by tests/e2e/test_dashboards.py
local null = sink.json.null
local function present(v) return v ~= nil and v ~= null end
local function is_dlq_retry(ev)
  if ev.headers and ev.headers["x-replayed-from-dlq-id"] then return true end
  return type(ev.payload) == "table" and present(ev.payload._replayed_from_dlq_id)
end
return {
  describe = function(ev)
    local p = ev.payload
    if type(p) ~= "table" then return nil, nil end
    local t = p.event_type
    if not present(t) then t = p.type end
    return present(p.tenant_id) and p.tenant_id or nil, present(t) and t or nil
  end,
  route = function(ev, info)
    if info.tenant_id == nil then return "dlq", "missing_tenant" end
    if type(ev.payload) == "table" and ev.payload.hold == true and not is_dlq_retry(ev) then
      return "dlq", "held for review"
    end
    return nil
  end,
  dlq_retry = function(e)
    if e.reason == "policy_route" and e.attempts == 0 then return 1 end
    return nil
  end,
  replay_source = function(req)
    if req.reason == "bulk-fix" then return "migration_tool" end
    if req.kind == "webhook" then return "webhook" end
    if req.kind == "scheduled" then return "scheduled" end
    if req.automatic then return "automated" end
    return "operator_api"
  end,
}
"""
BROKEN_POLICY = "return { describe = function(ev) return ev.payload.tenant_id end,\n"


# --------------------------------------------------------------------------------------
# the world: one service, its database, a Prometheus, and the ledger of what was done
# --------------------------------------------------------------------------------------

@dataclass
class World:
    dsn: str
    sink: harness.SinkProcess
    api: Any
    prom: Prometheus
    topics: dict
    t_start: datetime = None
    win_from: datetime = None
    win_to: datetime = None
    t_eval: float = 0.0
    originals: dict = field(default_factory=dict)   # id -> {tenant, topic}
    replays: list = field(default_factory=list)     # journal rows of replays (ledger form)
    dlq: dict = field(default_factory=dict)         # id -> {reason, status, tenant, attempts}
    jobs: dict = field(default_factory=dict)        # id -> {kind, source, requested_by, ...}
    slow_job: int = 0
    reload_error: str = ""
    r42: int = 0                                    # the replay of event 42
    r42b: int = 0                                   # the replay of that replay

    # ---- the ledger
    def tenant_of(self, event_id: int) -> str:
        if event_id in self.originals:
            return self.originals[event_id]["tenant"]
        return next(r["tenant"] for r in self.replays if r["id"] == event_id)

    def depth_of(self, event_id: int) -> int:
        if event_id in self.originals:
            return 0
        return next(r["depth"] for r in self.replays if r["id"] == event_id)

    def topic_of(self, event_id: int) -> str:
        if event_id in self.originals:
            return self.originals[event_id]["topic"]
        return next(r["topic"] for r in self.replays if r["id"] == event_id)

    @staticmethod
    def picks(tenant, sel) -> bool:
        return sel is ALL or tenant in sel

    def n_originals(self, sel=ALL) -> int:
        return sum(1 for o in self.originals.values() if self.picks(o["tenant"], sel))

    def replays_of(self, sel=ALL) -> list[dict]:
        return [r for r in self.replays if self.picks(r["tenant"], sel)]

    def dlq_counts(self, sel=ALL) -> Counter:
        return Counter((d["reason"], d["status"]) for d in self.dlq.values()
                       if self.picks(d["tenant"], sel))

    def jobs_of(self, sel=ALL) -> set[int]:
        return {j for j, v in self.jobs.items() if sel is ALL or v["tenants"] & set(sel)}

    def add_replay(self, row: dict, parent: int | None, dlq_id: int | None, source: str,
                   job: int) -> dict:
        tenant = self.tenant_of(parent) if parent else self.dlq[dlq_id]["tenant"]
        topic = self.topic_of(parent) if parent else self.topics["main"]
        depth = self.depth_of(parent) + 1 if parent else 1
        entry = {"id": row["id"], "parent": parent, "dlq": dlq_id, "tenant": tenant,
                 "topic": topic, "source": source, "depth": depth, "job": job}
        got = {"id": row["id"], "parent": row["replayed_from_event_id"],
               "dlq": row["replayed_from_dlq_id"], "tenant": row["tenant_id"],
               "topic": row["topic"], "source": row["replay_source"],
               "depth": row["replay_count"], "job": row["replay_job_id"]}
        assert got == entry, f"the replay did not land as expected: {got} != {entry}"
        self.replays.append(entry)
        return entry

    def add_job(self, job_id: int, tenants: set, failed: int = 0) -> None:
        """failed: the items the job should count failed (a DLQ retry that failed again)."""
        row = query_dicts(self.dsn, "SELECT * FROM replay_jobs WHERE id = %s", (job_id,))[0]
        self.jobs[job_id] = {"kind": row["kind"], "source": row["replay_source"],
                             "requested_by": row["requested_by"], "reason": row["reason"],
                             "total": row["total"], "tenants": set(tenants), "failed": failed}


def db_now(dsn: str) -> datetime:
    return scalar(dsn, "SELECT now()")


def single_replay(w: World, event_id: int, reason: str = "ticket 4711") -> dict:
    body = ok_json(w.api.post(f"/replay/{event_id}", json={"reason": reason}), 202)
    k = body["kafka"]
    row = wait_journal_at(w.dsn, k["topic"], k["partition"], k["offset"], sinks=[w.sink])
    w.add_job(body["job_id"], {w.tenant_of(event_id)})
    return w.add_replay(row, event_id, None, "operator_api", body["job_id"])


@pytest.fixture(scope="module")
def world(pg, kafka, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("dashboards")
    factory = harness.SinkFactory(workdir, kafka, "dashboards")
    dsn = pg.new_database("dashboards")
    topics = {"main": kafka.create_topic(partitions=4), "side": kafka.create_topic(partitions=2),
              "archive": kafka.create_topic(partitions=1)}
    policy = write_policy(workdir / "policies" / "dashboards.lua", POLICY)
    s = factory(topics=[topics["main"], topics["side"]], dsn=dsn, policies=[str(policy)],
                overrides={"http": {"tokens": TOKENS},
                           "webhooks": {"secret": SECRET, "tolerance_s": 300}},
                allow_errors=[RELOAD_FAILED_LOG])
    api = api_for(s, OPS_TOKEN)
    prom = Prometheus(workdir / "prometheus", listen_address(s, "metrics"), [ALERTS])
    w = World(dsn=dsn, sink=s, api=api, prom=prom, topics=topics)
    try:
        _build_history(w, kafka, factory)
        yield w
    finally:
        if w.slow_job:
            w.api.post(f"/replay/jobs/{w.slow_job}/cancel")
        prom.stop()
        problems = factory.teardown()
        if problems:
            pytest.fail("eventsink logs after the dashboard tests:\n\n" + "\n\n".join(problems),
                        pytrace=False)


def _build_history(w: World, kafka, factory) -> None:
    dsn, api, s = w.dsn, w.api, w.sink
    w.prom.wait_scrapes(2)
    w.t_start = db_now(dsn)

    # originals: five waves on the main topic, then the side topic, with scrapes in between
    # so that Prometheus sees the counters move
    for wave in range(WAVES):
        recs = [(f"lead-{wave}-{i}", make_event(wave * 100 + i, tenant=WAVE_TENANTS[i],
                                                event_type="lead.created"), None, None)
                for i in range(WAVE_SIZE)]
        kafka.produce(w.topics["main"], recs)
        wait_rows(dsn, "SELECT count(*) FROM event_journal", (wave + 1) * WAVE_SIZE, sinks=[s])
        w.prom.wait_scrapes(2)
    kafka.produce(w.topics["side"], [(f"deal-{i}", make_event(900 + i, tenant="globex",
                                                             event_type="deal.won"), None, None)
                                     for i in range(SIDE_EVENTS)])
    n_main = WAVES * WAVE_SIZE + SIDE_EVENTS
    wait_rows(dsn, "SELECT count(*) FROM event_journal", n_main, sinks=[s])

    # the archive topic is loaded by a second service that then stops: the slow job's
    # replays go back to a topic nobody consumes any more, so the job runs for minutes
    # without changing the journal
    b = factory(topics=[w.topics["archive"]], dsn=dsn, group_id=f"archive-{factory.group_id}",
                overrides={"http": {"tokens": TOKENS}})
    kafka.produce(w.topics["archive"], [(f"old-{i}", make_event(5000 + i, tenant="archive",
                                                               event_type="lead.imported"),
                                         None, None) for i in range(ARCHIVE_EVENTS)])
    wait_rows(dsn, "SELECT count(*) FROM event_journal", n_main + ARCHIVE_EVENTS, sinks=[s, b])
    assert b.terminate() == 0

    for r in query_dicts(dsn, "SELECT id, tenant_id, topic, replay_count FROM event_journal"):
        assert r["replay_count"] == 0
        w.originals[r["id"]] = {"tenant": r["tenant_id"], "topic": r["topic"]}
    by_tenant = Counter(o["tenant"] for o in w.originals.values())
    assert by_tenant == {"acme": 25, "globex": 20, "initech": 10, "archive": ARCHIVE_EVENTS}
    main_ids = sorted(i for i, o in w.originals.items() if o["topic"] == w.topics["main"])
    assert main_ids == list(range(1, WAVES * WAVE_SIZE + 1)), "journal ids are not 1..50"
    w.prom.wait_scrapes(2)

    # poison: seven records for the DLQ; the two held ones come back by automated retry
    kafka.produce(w.topics["main"], [(k, v, None, None) for k, v, _ in POISON])
    wait_rows(dsn, "SELECT count(*) FROM dead_letter_queue", len(POISON), sinks=[s])
    for d in query_dicts(dsn, "SELECT id, event_key, reason, tenant_id FROM dead_letter_queue"):
        want = next(r for k, _, r in POISON if k == d["event_key"])
        assert d["reason"] == want, d
        w.dlq[d["id"]] = {"reason": d["reason"], "status": "pending", "tenant": d["tenant_id"],
                          "key": d["event_key"]}
    held = sorted(i for i, d in w.dlq.items() if d["reason"] == "policy_route")
    wait_rows(dsn, "SELECT count(*) FROM dead_letter_queue WHERE status = 'resolved'", 2,
              sinks=[s])
    for dlq_id in held:
        w.dlq[dlq_id]["status"] = "resolved"
        row = query_dicts(dsn, "SELECT * FROM event_journal WHERE replayed_from_dlq_id = %s",
                          (dlq_id,))[0]
        job = scalar(dsn, "SELECT job_id FROM replay_job_items WHERE dlq_id = %s ORDER BY job_id"
                          " LIMIT 1", (dlq_id,))
        w.add_job(job, {w.dlq[dlq_id]["tenant"]})
        w.add_replay(row, None, dlq_id, "automated", job)
    w.prom.wait_scrapes(2)

    # an operator discards one entry and retries another, which fails again
    discard = next(i for i, d in sorted(w.dlq.items()) if d["reason"] == "missing_tenant")
    ok_json(api.post(f"/dlq/{discard}/discard"))
    w.dlq[discard]["status"] = "discarded"
    retry = next(i for i, d in sorted(w.dlq.items()) if d["key"] == "bad-json-2")
    job = ok_json(api.post(f"/dlq/{retry}/retry"), 202)["job_id"]
    wait_job(api, job, sinks=[s])
    harness.wait_for(lambda: query_dicts(dsn, "SELECT attempts, status FROM dead_letter_queue"
                                              " WHERE id = %s", (retry,))[0]
                     == {"attempts": 1, "status": "pending"}, 60,
                     what=f"DLQ entry {retry} to fail again")
    w.add_job(job, {w.dlq[retry]["tenant"]} - {None}, failed=1)  # it failed again

    # replays through the operator API, and a replay of a replay
    for event_id in SINGLE_REPLAYS:
        r = single_replay(w, event_id)
        if event_id == 42:
            w.r42 = r["id"]
    w.r42b = single_replay(w, w.r42, reason="replay of a replay")["id"]
    w.prom.wait_scrapes(2)

    # the incident window: a batch (tagged by the policy) and a signed webhook
    w.win_from = db_now(dsn)
    time.sleep(0.05)
    job = ok_json(api.post("/replay/batch", json={"ids": BATCH_REPLAYS, "reason": "bulk-fix"}),
                  202)["job_id"]
    assert wait_job(api, job, sinks=[s])["status"] == "done"
    w.add_job(job, {w.tenant_of(i) for i in BATCH_REPLAYS})
    for row in replay_rows_of_job(dsn, job):
        w.add_replay(row, row["replayed_from_event_id"], None, "migration_tool", job)
    body, headers = signed_request(SECRET, {"ids": WEBHOOK_REPLAYS})
    job = ok_json(post_webhook(api, body, headers), 202)["job_id"]
    assert wait_job(api, job, sinks=[s])["status"] == "done"
    w.add_job(job, {w.tenant_of(i) for i in WEBHOOK_REPLAYS})
    rows = harness.wait_for(lambda: (lambda r: r if len(r) == len(WEBHOOK_REPLAYS) else None)(
        replay_rows_of_job(dsn, job)), 60, what="the webhook's replays")
    for row in rows:
        w.add_replay(row, row["replayed_from_event_id"], None, "webhook", job)
    wait_rows(dsn, "SELECT count(*) FROM event_journal WHERE replay_count > 0", len(w.replays),
              sinks=[s])
    time.sleep(0.05)
    w.win_to = db_now(dsn)
    w.prom.wait_scrapes(2)

    # a slow range job over the archive (1 event/s): it stays running through the tests
    got = ok_json(api.post("/replay/range", json={
        "start": "2020-01-01T00:00:00Z", "end": "2100-01-01T00:00:00Z", "tenant": "archive",
        "rate_per_s": 1, "reason": "slow backfill"}), 202)
    assert got["matched"] == ARCHIVE_EVENTS, got
    w.slow_job = got["job_id"]
    harness.wait_for(lambda: ok_json(api.get(f"/replay/jobs/{w.slow_job}"))["succeeded"] >= 1,
                     60, what="the slow job to start")
    w.add_job(w.slow_job, {"archive"})

    # a policy reload that fails: the old set stays, /admin/policies shows the error
    policy_file = Path(re.search(r'policies = \{\s*"([^"]+)"', s.config_path.read_text()).group(1))
    write_policy(policy_file, BROKEN_POLICY)
    error_json(api.post("/admin/reload"), 422)
    w.reload_error = ok_json(api.get("/admin/policies"))["last_error"]
    assert w.reload_error
    write_policy(policy_file, POLICY)  # fixed on disk; not reloaded, so the error stays shown

    w.prom.wait_scrapes(3)
    w.t_eval = time.time()


# --------------------------------------------------------------------------------------
# the dashboard and the document, without a service
# --------------------------------------------------------------------------------------

REQUIRED_PANELS = {  # title -> (panel type, query language)
    "Original vs replayed events": ("timeseries", "sql"),
    "Replay sources": ("piechart", "sql"),
    "Replay rate": ("gauge", "sql"),
    "Recent replay events": ("table", "sql"),
    "DLQ entries by reason and status": ("table", "sql"),
    "Replay jobs in progress": ("table", "sql"),
    "Throughput": ("timeseries", "promql"),
    "Consumer lag": ("timeseries", "promql"),
    "Batch latency": ("timeseries", "promql"),
}


def test_dashboard_json_is_importable():
    dash = load_dashboard()
    inputs = {i["name"]: i for i in dash["__inputs"]}
    assert {i["pluginId"] for i in inputs.values()} == {PG_PLUGIN, "prometheus"}
    assert all(i["type"] == "datasource" for i in inputs.values())
    uid_of = {i["pluginId"]: "${%s}" % name for name, i in inputs.items()}
    required = {(r["type"], r["id"]) for r in dash["__requires"]}
    assert ("datasource", PG_PLUGIN) in required and ("datasource", "prometheus") in required
    assert dash["uid"] and dash["title"] and dash.get("id") is None
    assert isinstance(dash["schemaVersion"], int) and dash["schemaVersion"] >= 36

    panels = data_panels(dash)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in dash["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
    for p in panels:
        assert ("panel", p["type"]) in required, f"{p['type']} missing from __requires"
        for t in [p] + p["targets"]:
            ds = t["datasource"]
            assert ds["uid"] == uid_of[ds["type"]], f"{p['title']}: data source {ds}"
        assert p.get("description"), f"{p['title']} has no description"
    titles = {p["title"]: p for p in panels}
    for title, (ptype, lang) in REQUIRED_PANELS.items():
        assert title in titles, f"no panel {title!r}"
        assert titles[title]["type"] == ptype, title
        assert all(("rawSql" in t) == (lang == "sql") for t in titles[title]["targets"]), title

    # the tenant variable: a query over the journal, multi-value with All
    var = next(v for v in dash["templating"]["list"] if v["name"] == "tenant")
    assert var["type"] == "query" and var["includeAll"] and var["multi"]
    assert var["datasource"]["uid"] == uid_of[PG_PLUGIN]
    assert normalize(var["query"]).startswith("SELECT DISTINCT tenant_id FROM event_journal")
    assert var["allValue"] == "'__all__'"

    # every SQL panel is bounded by the time range and filtered by tenant
    sql = [t for t in dashboard_targets(dash) if t.kind == "sql"]
    assert len(sql) >= 8
    for t in sql:
        assert re.search(r"\$__time(Filter|From|To)\(", t.text), f"{t.panel}: no time macro"
        assert re.search(r"tenant_id\)? IN \(\$tenant\)", t.text), t.panel
        assert "('__all__' IN ($tenant) OR " in t.text, t.panel
        if t.fmt == "time_series":
            assert "$__timeGroupAlias(" in t.text, t.panel


def test_document_has_every_query_of_the_dashboard():
    dash = load_dashboard()
    targets = dashboard_targets(dash)
    blocks = doc_blocks()
    doc_sql = [b for b in blocks if b.lang == "sql"]
    doc_prom = [b for b in blocks if b.lang == "promql"]
    dash_sql = {normalize(t.text) for t in targets if t.kind == "sql"}
    dash_prom = {normalize(t.text) for t in targets if t.kind == "promql"}
    assert dash_sql <= {normalize(b.text) for b in doc_sql}, "a dashboard SQL query is not in the doc"
    assert dash_prom == {normalize(b.text) for b in doc_prom}, "the doc's PromQL differs"
    for b in doc_sql:
        if normalize(b.text) not in dash_sql:
            assert b.marker in DOC_CHECKS, (f"the doc's SQL under {b.heading!r} is neither a "
                                            f"dashboard query nor checked by this test")
    assert set(DOC_CHECKS) == {b.marker for b in doc_sql if b.marker}
    text = QUERIES_DOC.read_text()
    assert "payload->>'_replayed_from_event_id' = '42'" in text
    for topic in ("Import", "tenant", "Organic vs replayed", "incident window",
                  "Was event #42 replayed", "Manual vs automated"):
        assert topic in text, topic

    readme = (harness.REPO / "README.md").read_text()
    m = re.search(r"^## Dashboards and alerts\n(.*?)(?=^## |\Z)", readme, re.M | re.S)
    assert m, "README.md has no section 'Dashboards and alerts'"
    section = m.group(1)
    for ref in ("grafana/eventsink-dashboard.json", "grafana/eventsink-alerts.yml",
                "docs/GRAFANA_REPLAY_QUERIES.md", "docs/status-page.png"):
        assert ref in section, ref
    png = harness.REPO / "docs" / "status-page.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_alert_rules_pass_promtool_and_each_has_unit_tests():
    r = promtool("check", "rules", str(ALERTS))
    assert r.returncode == 0, r.stdout + r.stderr
    r = promtool("test", "rules", ALERT_TESTS.name, cwd=ALERT_TESTS.parent)
    assert r.returncode == 0, r.stdout + r.stderr
    rules = rule_exprs()
    assert {"EventsinkDLQGrowing", "EventsinkConsumerLagHigh", "EventsinkPostgresDown",
            "EventsinkKafkaDown", "EventsinkPolicyReloadFailed", "EventsinkReplayFailed",
            "EventsinkReplayRateHigh"} <= set(rules)
    cases = alert_test_cases()
    for name in rules:
        assert True in cases.get(name, []), f"no unit test shows {name} firing"
        assert False in cases.get(name, []), f"no unit test shows {name} staying quiet"


def _csp_hash(text: str, tag: str) -> str:
    import base64
    import hashlib
    body = re.search(rf"<{tag}>(.*?)</{tag}>", text, re.S).group(1)
    return "sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()


def test_status_page_is_self_contained():
    html = STATUS_PAGE.read_text()
    assert len(re.findall(r"<script\b", html)) == 1 and len(re.findall(r"<style\b", html)) == 1
    assert not re.search(r"<script[^>]*\bsrc=|<link[^>]*stylesheet|@import|@font-face|<img\b",
                         html, re.I)
    assert not re.search(r"""(https?:)?//[a-z0-9.-]+\.[a-z]{2,}""", html.replace(
        "http-equiv", "")), "the page refers to another origin"
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1)
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'" and directives["connect-src"] == "'self'"
    for tag, directive in (("script", "script-src"), ("style", "style-src")):
        want = _csp_hash(html, tag)
        assert directives[directive] == f"'{want}'", (
            f"web/status.html: the {tag} block changed; set {directive} to '{want}'")
    for needed in ("sessionStorage", "Authorization", "Bearer ", "<canvas", "/events/latest",
                   "/lineage", "/stats", "/replay/jobs", "/admin/policies", "/health"):
        assert needed in html, needed


# --------------------------------------------------------------------------------------
# the dashboard's SQL against the database
# --------------------------------------------------------------------------------------

def _rows(dsn: str, sql: str) -> list[dict]:
    return query_dicts(dsn, sql)


def _check_original_vs_replayed(w, rows, sel, empty):
    if empty:
        assert rows == []
        return
    assert [r["time"] for r in rows] == sorted(r["time"] for r in rows)
    assert all(float(r["time"]) % 60 == 0 for r in rows), "buckets are not whole minutes"
    assert sum(r["original"] for r in rows) == w.n_originals(sel)
    assert sum(r["replayed"] for r in rows) == len(w.replays_of(sel))


def _check_replay_rate(w, rows, sel, empty):
    assert len(rows) == 1
    o, r = w.n_originals(sel), len(w.replays_of(sel))
    want = 0 if empty or not (o + r) else round(100.0 * r / (o + r), 2)
    assert float(rows[0]["replay rate"]) == pytest.approx(want, abs=0.005)


def _check_replay_sources(w, rows, sel, empty):
    want = Counter(r["source"] for r in w.replays_of(sel)) if not empty else Counter()
    assert {r["source"]: r["replays"] for r in rows} == dict(want)
    assert [r["replays"] for r in rows] == sorted((r["replays"] for r in rows), reverse=True)


def _check_recent_replays(w, rows, sel, empty):
    want = [] if empty else sorted(w.replays_of(sel), key=lambda r: -r["id"])[:100]
    got = [{"id": r["id"], "topic": r["topic"], "tenant": r["tenant"], "source": r["source"],
            "parent": r["replayed from"], "dlq": r["from DLQ entry"], "depth": r["depth"],
            "job": r["job"]} for r in rows]
    assert got == [{k: x[k] for k in ("id", "topic", "tenant", "source", "parent", "dlq",
                                      "depth", "job")} for x in want]
    assert all(r["received_at"] is not None for r in rows)


def _check_dlq_by_reason(w, rows, sel, empty):
    want = Counter() if empty else w.dlq_counts(sel)
    assert {(r["reason"], r["status"]): r["entries"] for r in rows} == dict(want)


def _check_dlq_over_time(w, rows, sel, empty):
    want = Counter() if empty else Counter()
    if not empty:
        for (reason, _), n in w.dlq_counts(sel).items():
            want[reason] += n
    got = Counter()
    for r in rows:
        assert float(r["time"]) % 60 == 0
        got[r["metric"]] += r["entries"]
    assert got == want


def _check_jobs_in_progress(w, rows, sel, empty):
    want = [] if empty or not (sel is ALL or "archive" in sel) else [w.slow_job]
    assert [r["id"] for r in rows] == want
    for r in rows:
        job = query_dicts(w.dsn, "SELECT * FROM replay_jobs WHERE id = %s", (r["id"],))[0]
        assert r["status"] in ("pending", "running") and r["kind"] == "range"
        assert r["total"] == ARCHIVE_EVENTS and r["source"] == "operator_api"
        assert r["requested_by"] == "ops" and r["reason"] == "slow backfill"
        assert 1 <= r["succeeded"] <= job["succeeded"] and r["failed"] == 0
        assert r["pending"] == r["total"] - r["succeeded"] - r["failed"]
        assert float(r["progress"]) == pytest.approx(100.0 * r["succeeded"] / r["total"], abs=0.06)


def _check_jobs_in_range(w, rows, sel, empty):
    want = set() if empty else w.jobs_of(sel)
    assert [r["id"] for r in rows] == sorted(want, reverse=True)
    for r in rows:
        j = w.jobs[r["id"]]
        assert (r["kind"], r["source"], r["requested_by"], r["reason"], r["total"]) == (
            j["kind"], j["source"], j["requested_by"], j["reason"], j["total"])


PANEL_CHECKS = {
    "Original vs replayed events": _check_original_vs_replayed,
    "Replay rate": _check_replay_rate,
    "Replay sources": _check_replay_sources,
    "Recent replay events": _check_recent_replays,
    "DLQ entries by reason and status": _check_dlq_by_reason,
    "DLQ entries over time by reason": _check_dlq_over_time,
    "Replay jobs in progress": _check_jobs_in_progress,
    "Replay jobs in the time range": _check_jobs_in_range,
}

SELECTIONS = [ALL, ["acme"], ["globex", "initech"], ["archive"], ["nobody"]]


def test_dashboard_sql_returns_the_history(world):
    w = world
    dash = load_dashboard()
    now = datetime.now(timezone.utc)
    ranges = {"all": (w.t_start - timedelta(minutes=1), now + timedelta(minutes=1)),
              "empty": (w.t_start - timedelta(days=2), w.t_start - timedelta(days=1))}
    sql = [t for t in dashboard_targets(dash) if t.kind == "sql"]
    assert {t.panel for t in sql} == set(PANEL_CHECKS), "a SQL panel has no check here"
    checked = 0
    for t in sql:
        for name, (start, end) in ranges.items():
            for sel in SELECTIONS:
                expanded = expand_sql(t.text, start, end, sel)
                try:
                    rows = _rows(w.dsn, expanded)
                except Exception as e:
                    raise AssertionError(f"{t.panel}: the query fails: {e}\n{expanded}") from None
                try:
                    PANEL_CHECKS[t.panel](w, rows, sel, name == "empty")
                except AssertionError as e:
                    raise AssertionError(f"panel {t.panel!r}, tenants "
                                         f"{'All' if sel is ALL else sel}, {name} range: {e}\n"
                                         f"{expanded}\n-> {rows[:20]}") from None
                checked += 1
    assert checked == len(sql) * len(ranges) * len(SELECTIONS)

    # the history itself, as the panels should show it
    assert Counter(r["source"] for r in w.replays) >= Counter(
        {"operator_api": 5, "migration_tool": 3, "webhook": 2, "automated": 2})
    assert w.dlq_counts() == Counter({("invalid_json", "pending"): 2,
                                      ("invalid_utf8", "pending"): 1,
                                      ("missing_tenant", "pending"): 1,
                                      ("missing_tenant", "discarded"): 1,
                                      ("policy_route", "resolved"): 2})

    # the tenant variable's query
    var = next(v for v in dash["templating"]["list"] if v["name"] == "tenant")
    assert {r[0] for r in query(w.dsn, var["query"])} == {"acme", "globex", "initech", "archive"}

    # a 5-minute interval groups into 5-minute buckets with the same totals
    t = next(t for t in sql if t.panel == "Original vs replayed events")
    rows = _rows(w.dsn, expand_sql(t.text, *ranges["all"], ALL, interval="5m"))
    assert all(float(r["time"]) % 300 == 0 for r in rows)
    assert sum(r["original"] for r in rows) == w.n_originals()


# --------------------------------------------------------------------------------------
# the document's audit queries against the database
# --------------------------------------------------------------------------------------

def _doc_per_day(w, rows):
    assert sum(r["organic"] for r in rows) == w.n_originals()
    assert sum(r["replayed"] for r in rows) == len(w.replays)
    for r in rows:
        assert float(r["replayed_pct"]) == pytest.approx(
            100.0 * r["replayed"] / (r["organic"] + r["replayed"]), abs=0.006)


def _doc_replayed_in_window(w, rows):
    inside = [r for r in w.replays if r["source"] in ("migration_tool", "webhook")]
    assert [r["id"] for r in rows] == sorted(r["id"] for r in inside)
    for r in rows:
        x = next(i for i in inside if i["id"] == r["id"])
        j = w.jobs[x["job"]]
        assert (r["replay_source"], r["replayed_from_event_id"], r["depth"], r["job_kind"],
                r["requested_by"], r["job_reason"]) == (x["source"], x["parent"], 1, j["kind"],
                                                        j["requested_by"], j["reason"])


def _doc_jobs_in_window(w, rows):
    want = sorted(j for j, v in w.jobs.items() if v["kind"] in ("batch", "webhook"))
    assert [r["id"] for r in rows] == want
    assert {(r["kind"], r["replay_source"], r["requested_by"], r["status"], r["total"],
             r["succeeded"]) for r in rows} == {("batch", "migration_tool", "ops", "done", 3, 3),
                                                ("webhook", "webhook", "webhook", "done", 2, 2)}


def _doc_event_42(w, rows):
    r42 = next(r for r in w.replays if r["id"] == w.r42)
    assert [(r["id"], r["topic"]) for r in rows] == [(w.r42, r42["topic"])]


def _doc_event_42_descendants(w, rows):
    assert [(r["id"], r["replayed_from_event_id"], r["replay_count"], r["replay_source"])
            for r in rows] == [(w.r42, 42, 1, "operator_api"),
                               (w.r42b, w.r42, 2, "operator_api")]


def _doc_manual_vs_automated(w, rows):
    kind = {"operator_api": "manual", "scheduled": "automated", "automated": "automated",
            "webhook": "automated"}
    want = Counter((kind.get(r["source"], "policy-defined"), r["source"]) for r in w.replays)
    assert {(r["trigger"], r["replay_source"]): r["replays"] for r in rows} == dict(want)
    assert {r["trigger"] for r in rows} == {"manual", "automated", "policy-defined"}


def _doc_requests_by_source(w, rows):
    want: dict = {}
    failed: dict = {}
    for j in w.jobs.values():
        k = (j["source"], j["kind"], j["requested_by"])
        jobs, events = want.get(k, (0, 0))
        want[k] = (jobs + 1, events + j["total"])
        failed[k] = failed.get(k, 0) + j["failed"]
    assert {(r["replay_source"], r["kind"], r["requested_by"]): (r["jobs"], r["events"])
            for r in rows} == want
    for r in rows:
        k = (r["replay_source"], r["kind"], r["requested_by"])
        assert r["failed"] == failed[k], r  # a DLQ retry that failed again is no success
        if r["kind"] != "range":
            assert r["sent"] == r["events"] - failed[k], r
        else:
            assert 1 <= r["sent"] < r["events"]


DOC_CHECKS = {
    "organic-vs-replayed-per-day": _doc_per_day,
    "replayed-during-window": _doc_replayed_in_window,
    "replay-jobs-during-window": _doc_jobs_in_window,
    "was-event-42-replayed": _doc_event_42,
    "event-42-descendants": _doc_event_42_descendants,
    "manual-vs-automated-replays": _doc_manual_vs_automated,
    "replay-requests-by-source": _doc_requests_by_source,
}


def test_document_queries_answer_the_audit_questions(world):
    w = world
    dash_sql = {normalize(t.text) for t in dashboard_targets(load_dashboard()) if t.kind == "sql"}
    now = datetime.now(timezone.utc)
    checked = set()
    for b in doc_blocks():
        if b.lang != "sql":
            continue
        if normalize(b.text) in dash_sql:
            # a dashboard query: checked above; here it must run as printed, macros expanded
            _rows(w.dsn, expand_sql(b.text, w.t_start - timedelta(minutes=1), now, ALL))
            continue
        sql = expand_psql(b.text, {"from": w.win_from.isoformat(), "to": w.win_to.isoformat()})
        rows = _rows(w.dsn, sql)
        try:
            DOC_CHECKS[b.marker](w, rows)
        except AssertionError as e:
            raise AssertionError(f"doc query {b.marker!r}: {e}\n{sql}\n-> {rows[:20]}") from None
        checked.add(b.marker)
    assert checked == set(DOC_CHECKS)


# --------------------------------------------------------------------------------------
# PromQL against a real Prometheus scraping the service
# --------------------------------------------------------------------------------------

def _by(result: list[dict], *labels: str) -> dict:
    return {tuple(s["metric"].get(l, "") for l in labels): s["value"] for s in result}


def test_promql_of_the_dashboard_and_the_rules_on_real_metrics(world):
    w = world
    prom = w.prom
    text = requests.get(metrics_url(w.sink), timeout=30).text
    r = promtool("check", "metrics", input_text=text)
    assert r.returncode == 0, r.stdout + r.stderr
    exported = set(re.findall(r"^# TYPE (\S+) (\S+)", text, re.M))
    names = {n for n, _ in exported}
    names |= {f"{n}{suffix}" for n, t in exported if t == "histogram"
              for suffix in ("_bucket", "_sum", "_count")}

    dash = load_dashboard()
    prom_targets = [t for t in dashboard_targets(dash) if t.kind == "promql"]
    rules = rule_exprs()
    exprs = [(f"panel {t.panel!r} {t.ref}", t.text) for t in prom_targets]
    exprs += [(f"rule {name}", e) for name, e in rules.items()]
    at = w.t_eval
    results = {}
    for what, e in exprs:
        missing = metric_names(e) - names
        assert not missing, f"{what} uses metrics eventsink does not export: {missing}"
        results[what] = prom.query(e, at=at)  # fails on a PromQL error

    # what the panels show, against what the service did
    pt = {(t.panel, t.ref): results[f"panel {t.panel!r} {t.ref}"] for t in prom_targets}
    deps = {ref: v for (p, ref), v in pt.items() if p == "Dependencies"}
    assert [s["value"] for s in deps["A"]] == [1] and [s["value"] for s in deps["B"]] == [1]
    pending_then = scalar(w.dsn, "SELECT count(*) FROM dead_letter_queue WHERE status = 'pending'")
    assert [s["value"] for s in pt[("DLQ pending", "A")]] == [pending_then]
    assert [s["value"] for s in pt[("Replay jobs running", "A")]] == [1]
    assert [s["value"] for s in pt[("Policy version", "A")]] == [
        ok_json(w.api.get("/health"))["policy_version"]]
    assert [round(s["value"]) for s in pt[("Policy version", "B")]] == [1]  # the failed reload
    through = _by(pt[("Throughput", "A")], "kind")
    assert through[("original",)] > 0 and through[("replayed",)] > 0
    assert [s["value"] > 0 for s in pt[("Throughput", "B")]] == [True]
    assert [s["value"] > 0 for s in pt[("Throughput", "C")]] == [True]
    lag = _by(pt[("Consumer lag", "A")], "topic")
    assert {(w.topics["main"],), (w.topics["side"],)} <= set(lag)
    assert all(v >= 0 for v in lag.values())
    for ref in ("A", "B"):
        v = [s["value"] for s in pt[("Batch latency", ref)]]
        assert len(v) == 1 and math.isfinite(v[0]) and 0 < v[0] <= 10, (ref, v)
    sent = _by(pt[("Replays sent by source and result", "A")], "source", "result")
    assert sent[("operator_api", "ok")] > 0  # the slow job sends 1 event/s
    assert {("webhook", "ok"), ("automated", "ok"), ("migration_tool", "ok"),
            ("operator_api", "failed")} <= set(sent)

    # the rules: loaded, evaluated without error; the ones this history triggers are on
    groups = prom.api("/api/v1/rules")["groups"]
    loaded = {r["name"]: r for g in groups for r in g["rules"] if r["type"] == "alerting"}
    assert set(loaded) == set(rules)
    for name, rule in loaded.items():
        assert rule["health"] == "ok", f"{name}: {rule.get('lastError')}"
    alerts = {(s["metric"]["alertname"], s["metric"]["alertstate"])
              for s in prom.query("ALERTS", at=at)}
    assert ("EventsinkPolicyReloadFailed", "firing") in alerts, alerts
    assert ("EventsinkDLQGrowing", "pending") in alerts, alerts  # for: 10m
    quiet = {"EventsinkDown", "EventsinkPostgresDown", "EventsinkKafkaDown",
             "EventsinkConsumerLagHigh", "EventsinkReplayFailed", "EventsinkReplayJobStalled",
             "EventsinkReplayRateHigh"}
    assert not {a for a, _ in alerts} & quiet, alerts
    for name in quiet:
        assert results[f"rule {name}"] == [], (name, results[f"rule {name}"])
    assert results["rule EventsinkPolicyReloadFailed"] and results["rule EventsinkDLQGrowing"]


# --------------------------------------------------------------------------------------
# the status page in headless Chromium
# --------------------------------------------------------------------------------------

PAGE_STATE = r"""(() => {
  const $ = id => document.getElementById(id);
  const q = s => Array.from(document.querySelectorAll(s));
  const txt = id => $(id) ? $(id).textContent : null;
  return {
    login: $('login').className, loginError: txt('login-error'),
    pg: txt('pg-state'), kafka: txt('kafka-state'), versionPill: txt('policy-version-pill'),
    version: txt('policy-version'), policyError: txt('policy-error-text'),
    orig: $('orig-total').dataset.value || null, repl: $('repl-total').dataset.value || null,
    origText: txt('orig-total'), replText: txt('repl-total'),
    now: $('events-window').dataset.now || null,
    dlq: q('#dlq-table tbody tr').map(tr => [tr.dataset.reason, Object.fromEntries(
           Array.from(tr.querySelectorAll('td[data-status]')).map(td => [td.dataset.status, +td.dataset.count]))]),
    replays: q('#replays-table tbody tr').map(tr => ({id: +tr.dataset.id, source: tr.dataset.source,
         tenant: tr.dataset.tenant, lineage: tr.querySelector('[data-lineage]').dataset.lineage})),
    jobs: q('#jobs-table tbody tr').map(tr => ({id: +tr.dataset.jobId, succeeded: +tr.dataset.succeeded,
         failed: +tr.dataset.failed, total: +tr.dataset.total, status: tr.dataset.status})),
    banner: txt('banner'), updated: $('updated').dataset.updated || null,
  };
})()"""


def _expected_lineage(dsn: str, event_id: int) -> str:
    chain, cur = [], event_id
    while True:
        row = query_dicts(dsn, "SELECT id, replayed_from_event_id, replayed_from_dlq_id "
                               "FROM event_journal WHERE id = %s", (cur,))[0]
        chain.append(f"#{row['id']}")
        if row["replayed_from_event_id"] is None:
            if row["replayed_from_dlq_id"] is not None:
                chain.append(f"DLQ#{row['replayed_from_dlq_id']}")
            return ">".join(reversed(chain))
        cur = row["replayed_from_event_id"]


def _database_view(w: World, page_now_ms: float) -> dict:
    """What the page should show, read from the database."""
    cut = datetime.fromtimestamp(page_now_ms / 1000, timezone.utc) - timedelta(seconds=600)
    orig, repl = query(w.dsn, "SELECT count(*) FILTER (WHERE replay_count = 0), "
                              "count(*) FILTER (WHERE replay_count > 0) FROM event_journal "
                              "WHERE received_at >= %s", (cut,))[0]
    dlq: dict = {}
    for reason, status, n in query(w.dsn, "SELECT reason, status, count(*) FROM "
                                          "dead_letter_queue GROUP BY 1, 2"):
        dlq.setdefault(reason, {s: 0 for s in ("pending", "retrying", "resolved", "discarded")})
        dlq[reason][status] = n
    newest = [r[0] for r in query(w.dsn, "SELECT id FROM event_journal WHERE replay_count > 0 "
                                         "ORDER BY id DESC LIMIT 15")]
    replays = [{"id": i, "lineage": _expected_lineage(w.dsn, i)} for i in newest]
    jobs = [r[0] for r in query(w.dsn, "SELECT id FROM replay_jobs WHERE status IN "
                                       "('pending', 'running') ORDER BY id DESC")]
    return {"orig": orig, "repl": repl, "dlq": dlq, "replays": replays, "jobs": jobs}


def _matches_database(w: World, st: dict) -> list[str]:
    """Differences between the page and the database (empty when it shows the truth)."""
    if not st["now"] or st["orig"] is None:
        return ["the page has not shown the events yet"]
    db = _database_view(w, float(st["now"]))
    diffs = []
    if (int(st["orig"]), int(st["repl"])) != (db["orig"], db["repl"]):
        diffs.append(f"events {st['orig']}/{st['repl']} != database {db['orig']}/{db['repl']}")
    if dict(st["dlq"]) != db["dlq"]:
        diffs.append(f"DLQ {st['dlq']} != database {db['dlq']}")
    got = [{"id": r["id"], "lineage": r["lineage"]} for r in st["replays"]]
    if got != db["replays"]:
        diffs.append(f"replays {got} != database {db['replays']}")
    if [j["id"] for j in st["jobs"]] != db["jobs"]:
        diffs.append(f"jobs {st['jobs']} != database {db['jobs']}")
    return diffs


CARD_RECTS = r"""Array.from(document.querySelectorAll('section.card')).map(c => {
  const r = c.getBoundingClientRect();
  return {id: c.id, top: r.top, bottom: r.bottom, left: r.left, right: r.right, height: r.height};
})"""


def _refresh_traffic(b: Browser, cycles: int) -> dict:
    """The requests of `cycles` whole refresh cycles of the page, with their sizes."""
    def updated():
        return b.eval("document.getElementById('updated').dataset.updated")
    first = harness.wait_for(updated, 30, what="a refresh")
    mark, last = len(b.events), first
    for _ in range(cycles):
        prev = last
        last = harness.wait_for(lambda: updated() != prev and updated(), 30,
                                what="the next refresh")
    reqs = b.transfers(mark)
    return {"cycles": cycles, "requests": reqs,
            "bytes_per_refresh": sum(n for _, n in reqs) / cycles}


def test_status_page_in_headless_chromium(world):
    w = world
    if chromium_path() is None:
        pytest.fail("chromium is not installed: scripts/install-deps.sh installs it")
    base = local_url(listen_address(w.sink, "http"))

    # GET / is served without a token and is the file of web/status.html
    r = requests.get(base + "/", timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert r.content == STATUS_PAGE.read_bytes(), "the binary serves an old web/status.html"

    workdir = w.sink.workdir.parent
    with Browser(workdir) as b:
        b.navigate(base + "/")
        # the API needs a token: the page asks for one, and shows no data
        b.wait_js("document.getElementById('login').className === 'show'", 30,
                  what="the token form")
        st = b.eval(PAGE_STATE)
        assert st["replays"] == [] and st["dlq"] == [] and st["orig"] is None

        # a wrong token is refused and asked again
        b.eval("document.getElementById('token-input').focus(), true")
        b.type_text("not-a-token")
        b.press_enter()
        b.wait_js("document.getElementById('login').className === 'show' && "
                  "document.getElementById('login-error').textContent.includes('refused')", 30,
                  what="the refusal of a wrong token")

        # the right one: every panel fills, with the database's numbers
        b.eval("document.getElementById('token-input').focus(), true")
        b.type_text(OPS_TOKEN)
        b.press_enter()
        assert b.eval("sessionStorage.getItem('eventsink.apiToken')") == OPS_TOKEN
        diffs: list = []

        def shows_the_database():
            nonlocal diffs
            st = b.eval(PAGE_STATE)
            diffs = _matches_database(w, st)
            return st if not diffs else None
        try:
            st = harness.wait_for(shows_the_database, 60, interval=0.5,
                                  what="the page to show the database")
        except AssertionError as e:
            raise AssertionError(f"{e}: {diffs}") from None
        assert st["login"] == "" and st["pg"] == "up" and st["kafka"] == "up", st
        health = ok_json(w.api.get("/health"))
        assert st["version"] == st["versionPill"] == str(health["policy_version"])
        assert st["policyError"] == w.reload_error
        assert any(r["lineage"] == f"#42>#{w.r42}>#{w.r42b}" for r in st["replays"]), st["replays"]
        assert any(r["lineage"].startswith("DLQ#") for r in st["replays"]), st["replays"]
        (slow,) = st["jobs"]
        assert slow["id"] == w.slow_job and slow["total"] == ARCHIVE_EVENTS
        assert slow["status"] == "running" and 1 <= slow["succeeded"] < ARCHIVE_EVENTS

        # a replay made now shows up by itself, at the top, with its lineage
        before = int(st["repl"])
        new = single_replay(w, PAGE_REPLAY, reason="seen on the status page")
        try:
            st = harness.wait_for(shows_the_database, 30, interval=0.5,
                                  what="the page to pick up the new replay")
        except AssertionError as e:
            raise AssertionError(f"{e}: {diffs}") from None
        assert st["replays"][0] == {"id": new["id"], "source": "operator_api",
                                    "tenant": w.tenant_of(PAGE_REPLAY),
                                    "lineage": f"#{PAGE_REPLAY}>#{new['id']}"}
        assert int(st["repl"]) == before + 1

        b.screenshot(ARTIFACTS / "status-page.png")

        # a refresh is one small request (GET /stats); a list is fetched only when it changed
        traffic = _refresh_traffic(b, cycles=2)
        (ARTIFACTS / "status-page-traffic.json").write_text(json.dumps(traffic, indent=1))
        paths = [urlsplit(u).path for u, _ in traffic["requests"]]
        assert paths.count("/stats") == 2, traffic
        allowed = {"/stats", "/replay/jobs", "/events/latest", "/admin/policies"}
        assert {p for p in paths if not re.fullmatch(r"/events/\d+/lineage", p)} <= allowed, traffic
        for u, _ in traffic["requests"]:
            if urlsplit(u).path == "/events/latest":
                assert parse_qs(urlsplit(u).query) == {"replayed": ["true"], "limit": ["15"]}, u
        # nothing but the slow job moved: its progress is fetched, nothing else
        assert "/admin/policies" not in paths, traffic
        assert traffic["bytes_per_refresh"] <= 64 * 1024, traffic

        # one time format: the header's time is written like the tables' times
        st = b.eval(PAGE_STATE)
        updated = b.eval("document.getElementById('updated').textContent")
        assert re.match(r"updated \d\d:\d\d:\d\dZ · every 5 s$", updated), updated
        cells = b.eval("Array.from(document.querySelectorAll('#replays-table td.note')).map(td => td.textContent)")
        assert cells and all(re.fullmatch(r"\d\d:\d\d:\d\dZ|\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", c)
                             for c in cells), cells

        # every panel is on the screen at 1400x1000, and fits a phone's width (390 px)
        b.set_viewport(1400, 1000)
        rects = b.eval(CARD_RECTS)
        assert len(rects) == 5 and all(r["top"] >= 0 and r["bottom"] <= 1000 and r["right"] <= 1400
                                       for r in rects), rects
        b.screenshot(ARTIFACTS / "status-page-1400x1000.png", full_page=False)
        b.set_viewport(390, 844, mobile=True)
        harness.wait_for(lambda: b.eval("window.innerWidth") == 390, 10, what="the phone width")
        rects = b.eval(CARD_RECTS)
        assert b.eval("document.documentElement.scrollWidth") <= 390, rects
        assert len(rects) == 5 and all(r["left"] >= 0 and r["right"] <= 390 and r["height"] > 40
                                       for r in rects), rects
        b.screenshot(ARTIFACTS / "status-page-phone.png")
        b.set_viewport(1280, 1000)

        # the token stays for the tab: a reload does not ask again
        mark = len(b.events)
        b.page("Page.reload")
        b.wait_event("Page.loadEventFired", 30, since=mark)
        harness.wait_for(lambda: not _matches_database(w, b.eval(PAGE_STATE)), 60,
                         interval=0.5, what="the reloaded page to show the data")
        assert b.eval(PAGE_STATE)["login"] == ""

        # "forget token" asks again
        b.eval("document.getElementById('forget').click(), true")
        b.wait_js("document.getElementById('login').className === 'show'", 30)
        assert b.eval("sessionStorage.getItem('eventsink.apiToken')") is None

        assert b.console_problems() == []
        foreign = [u for u in b.requested_urls() if not (u.startswith(base + "/")
                                                         or u.startswith("data:"))]
        assert foreign == [], f"the page fetched from elsewhere: {foreign}"


def test_status_page_without_tokens_on_an_empty_service(db, topic, sink, tmp_path):
    """With no http.tokens the page asks for nothing; an empty service shows its empty
    states (no events, no DLQ entry, no replay, no job) without a script error."""
    s = sink(topics=[topic], dsn=db)
    base = local_url(listen_address(s, "http"))
    with Browser(tmp_path) as b:
        b.navigate(base + "/")
        b.wait_js("document.getElementById('updated').dataset.updated", 30,
                  what="a first refresh")
        st = b.eval(PAGE_STATE)
        assert st["login"] == "" and st["pg"] == "up" and st["kafka"] == "up", st
        assert (st["orig"], st["repl"]) == ("0", "0")
        assert st["replays"] == [] and st["dlq"] == [] and st["jobs"] == []
        for box in ("dlq-empty", "no-replays", "no-jobs", "policy-ok"):
            assert b.eval(f"!!document.getElementById('{box}')"), box
        assert b.eval("sessionStorage.length") == 0
        assert b.console_problems() == []
