"""Helpers for the dashboard, alert and status-page tests (test_dashboards.py): the queries of
grafana/eventsink-dashboard.json and docs/GRAFANA_REPLAY_QUERIES.md, Grafana's macro
expansion for PostgreSQL, the expressions of the Prometheus rules file, and a real
Prometheus server scraping a running eventsink, queried with promtool.

Built on harness.py only; it changes nothing there."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import requests

import harness

REPO = harness.REPO
DASHBOARD = REPO / "grafana" / "eventsink-dashboard.json"
ALERTS = REPO / "grafana" / "eventsink-alerts.yml"
ALERT_TESTS = REPO / "grafana" / "eventsink-alerts.test.yml"
QUERIES_DOC = REPO / "docs" / "GRAFANA_REPLAY_QUERIES.md"
STATUS_PAGE = REPO / "web" / "status.html"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"

ALL = object()  # the tenant variable set to "All"
ALL_VALUE = "'__all__'"  # the variable's custom all value


# --------------------------------------------------------------------------------------
# the dashboard and the document
# --------------------------------------------------------------------------------------

def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def data_panels(dash: dict) -> list[dict]:
    out = []
    for p in dash["panels"]:
        if p["type"] == "row":
            out.extend(p.get("panels", []))
        else:
            out.append(p)
    return out


@dataclass
class Target:
    panel: str
    panel_type: str
    ref: str
    kind: str  # "sql" or "promql"
    text: str
    fmt: str | None = None
    legend: str | None = None


def dashboard_targets(dash: dict) -> list[Target]:
    out = []
    for p in data_panels(dash):
        for t in p.get("targets", []):
            if "rawSql" in t:
                out.append(Target(p["title"], p["type"], t["refId"], "sql", t["rawSql"],
                                  fmt=t.get("format")))
            elif "expr" in t:
                out.append(Target(p["title"], p["type"], t["refId"], "promql", t["expr"],
                                  legend=t.get("legendFormat")))
    return out


@dataclass
class DocBlock:
    lang: str
    text: str
    marker: str | None  # the <!-- query: ID --> line just before the block, if any
    heading: str


def doc_blocks(text: str | None = None) -> list[DocBlock]:
    text = QUERIES_DOC.read_text() if text is None else text
    out = []
    heading = ""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        m = re.match(r"^\s*```(\w+)\s*$", line)
        if m:
            j = i + 1
            while not re.match(r"^\s*```\s*$", lines[j]):
                j += 1
            marker = None
            k = i - 1
            while k >= 0 and not lines[k].strip():
                k -= 1
            mm = re.match(r"^<!-- query: ([\w-]+) -->$", lines[k].strip()) if k >= 0 else None
            if mm:
                marker = mm.group(1)
            out.append(DocBlock(m.group(1), "\n".join(lines[i + 1:j]), marker, heading))
            i = j
        i += 1
    return out


def normalize(q: str) -> str:
    return re.sub(r"\s+", " ", q).strip().rstrip(";").strip()


# --------------------------------------------------------------------------------------
# Grafana's PostgreSQL macros
# --------------------------------------------------------------------------------------

def _seconds(interval: str) -> int:
    m = re.fullmatch(r"'?(\d+)(ms|s|m|h|d)'?", interval.strip())
    assert m, f"unsupported interval {interval!r}"
    n, unit = int(m.group(1)), m.group(2)
    return max(1, {"ms": n // 1000, "s": n, "m": 60 * n, "h": 3600 * n, "d": 86400 * n}[unit])


def iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def sql_quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _macro_args(text: str, start: int) -> tuple[list[str], int]:
    """The comma-separated arguments of the call whose '(' is at text[start]; and the index
    after its ')'."""
    depth, args, cur, i = 0, [], "", start
    while True:
        c = text[i]
        if c == "(":
            depth += 1
            if depth > 1:
                cur += c
        elif c == ")":
            depth -= 1
            if depth == 0:
                args.append(cur.strip())
                return [a for a in args if a != ""], i + 1
            cur += c
        elif c == "," and depth == 1:
            args.append(cur.strip())
            cur = ""
        else:
            cur += c
        i += 1


def expand_sql(sql: str, start: datetime, end: datetime, tenants: Any = ALL,
               interval: str = "1m") -> str:
    """What Grafana sends to PostgreSQL: template variables first ($__interval, $tenant —
    a quoted list, or the custom all value for All), then the time macros."""
    out = sql.replace("${__interval}", interval).replace("$__interval", interval)
    if tenants is ALL:
        value = ALL_VALUE
    else:
        assert tenants, "pick at least one tenant"
        value = ",".join(sql_quote(t) for t in tenants)
    out = re.sub(r"\$\{tenant(?::sqlstring)?\}|\$tenant\b", lambda m: value, out)

    def group(args: list[str], alias: bool) -> str:
        col, every = args[0], _seconds(args[1])
        expr = f"floor(extract(epoch from {col})/{every})*{every}"
        return expr + (' AS "time"' if alias else "")

    macros = {
        "__timeFilter": lambda a: f"{a[0]} BETWEEN '{iso(start)}' AND '{iso(end)}'",
        "__timeFrom": lambda a: f"'{iso(start)}'",
        "__timeTo": lambda a: f"'{iso(end)}'",
        "__timeGroupAlias": lambda a: group(a, True),
        "__timeGroup": lambda a: group(a, False),
        "__time": lambda a: f'{a[0]} AS "time"',
        "__unixEpochFilter": lambda a: (f"{a[0]} >= {int(start.timestamp())} AND "
                                        f"{a[0]} <= {int(end.timestamp())}"),
    }
    pat = re.compile(r"\$(__\w+)\(")
    while True:
        m = pat.search(out)
        if not m:
            break
        name = m.group(1)
        assert name in macros, f"unknown Grafana macro ${name} in {sql!r}"
        args, after = _macro_args(out, m.end() - 1)
        out = out[:m.start()] + macros[name](args) + out[after:]
    assert "$" not in out, f"unexpanded variable left in: {out}"
    return out


def expand_psql(sql: str, variables: dict[str, str]) -> str:
    """psql's :'name' variables as quoted literals (as `psql -v name=...` would)."""
    def sub(m):
        name = m.group(1)
        assert name in variables, f"psql variable :{name} has no value"
        return sql_quote(variables[name])
    return re.sub(r":'(\w+)'", sub, sql)


# --------------------------------------------------------------------------------------
# the Prometheus rules file (a YAML subset: no PyYAML in the test environment)
# --------------------------------------------------------------------------------------

def rule_exprs(text: str | None = None) -> dict[str, str]:
    """alert name -> expr, from the rules file."""
    text = ALERTS.read_text() if text is None else text
    lines = text.splitlines()
    out: dict[str, str] = {}
    name = None
    i = 0
    while i < len(lines):
        m = re.match(r"^\s*- alert:\s*(\S+)\s*$", lines[i])
        if m:
            name = m.group(1)
        m = re.match(r"^(\s*)expr:\s*(.*)$", lines[i])
        if m and name:
            indent, value = len(m.group(1)), m.group(2).strip()
            if value in ("|", ">", "|-", ">-"):
                body = []
                i += 1
                while i < len(lines) and (not lines[i].strip() or
                                          len(lines[i]) - len(lines[i].lstrip()) > indent):
                    body.append(lines[i].strip())
                    i += 1
                out[name] = "\n".join(b for b in body if b)
                continue
            out[name] = value.strip("'\"")
        i += 1
    return out


def alert_test_cases(text: str | None = None) -> dict[str, list[bool]]:
    """alert name -> for each alert_rule_test eval of it, whether it expects alerts."""
    text = ALERT_TESTS.read_text() if text is None else text
    out: dict[str, list[bool]] = {}
    for m in re.finditer(r"alertname:\s*(\S+)\s*\n\s*exp_alerts:\s*(\[\])?", text):
        out.setdefault(m.group(1), []).append(m.group(2) is None)
    return out


METRIC_NAME = re.compile(r"\b((?:eventsink|process)_[a-z0-9_]+)\b")


def metric_names(expr: str) -> set[str]:
    return set(METRIC_NAME.findall(expr))


# --------------------------------------------------------------------------------------
# a real Prometheus
# --------------------------------------------------------------------------------------

class Prometheus:
    """A Prometheus server scraping one eventsink every second and evaluating the rules file
    every second, on a free loopback port, with its data in workdir."""

    def __init__(self, workdir: Path, target: str, rule_files: list[Path] = (),
                 job: str = "eventsink"):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = harness.free_port()
        self.url = f"http://{harness.LOOPBACK}:{self.port}"
        cfg = self.dir / "prometheus.yml"
        rules = "".join(f"  - {json.dumps(str(p))}\n" for p in rule_files)
        cfg.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            + ("rule_files:\n" + rules if rules else "")
            + f"scrape_configs:\n  - job_name: {job}\n    scrape_interval: 1s\n"
              f"    scrape_timeout: 1s\n    static_configs:\n"
              f"      - targets: [{json.dumps(target)}]\n")
        self.log_path = self.dir / "prometheus.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address={harness.LOOPBACK}:{self.port}", "--log.level=warn",
             f"--web.console.templates={self.dir}", f"--web.console.libraries={self.dir}"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        harness.register_cleanup(self._cleanup)
        harness.wait_for(self._ready, 60, what="Prometheus to be ready")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited ({self.proc.returncode}):\n"
                                 f"{harness.tail(self.log_path.read_text(errors='replace'))}")
        try:
            return requests.get(self.url + "/-/ready", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def api(self, path: str, **params) -> Any:
        r = requests.get(self.url + path, params=params, timeout=harness.scaled(30))
        assert r.status_code == 200, f"{path}: {r.status_code} {r.text[:500]}"
        body = r.json()
        assert body["status"] == "success", body
        return body["data"]

    def scrapes_of(self, metric: str) -> int:
        """How many samples of `metric` Prometheus holds from the last 10 minutes."""
        data = self.api("/api/v1/query", query=f"count_over_time({metric}[10m])")
        return int(float(data["result"][0]["value"][1])) if data["result"] else 0

    def wait_scrapes(self, n: int = 2, metric: str = "eventsink_postgres_up") -> None:
        """Waits until n more scrapes of the target have been stored."""
        first = self.scrapes_of(metric)
        harness.wait_for(lambda: self.scrapes_of(metric) >= first + n, 60,
                         what=f"{n} more Prometheus scrapes")

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        """Evaluates expr with `promtool query instant` (at a unix time, default now):
        the result vector as [{"metric": {...}, "value": float}]. Fails on any error."""
        args = [PROMTOOL, "query", "instant", "-o", "json"]
        if at is not None:
            args.append(f"--time={at:.3f}")
        args += [self.url, expr]
        r = subprocess.run(args, capture_output=True, text=True, timeout=harness.scaled(60))
        assert r.returncode == 0, f"promtool query instant {expr!r}:\n{r.stdout}{r.stderr}"
        data = json.loads(r.stdout)
        if isinstance(data, dict) and "result" in data:  # a full API answer
            data = data["result"]
        out = []
        for s in data or []:
            v = s.get("value")
            out.append({"metric": s.get("metric", {}), "value": float(v[1]) if v else math.nan})
        return out

    def _cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if not self._log.closed:
            self._log.close()

    def stop(self) -> None:
        self._cleanup()
        harness.unregister_cleanup(self._cleanup)


def promtool(*args: str, input_text: str | None = None, cwd: Path | None = None
             ) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], input=input_text, capture_output=True, text=True,
                          timeout=harness.scaled(120), cwd=str(cwd) if cwd else None)
