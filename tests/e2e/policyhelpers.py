"""Helpers for the policy and automation end-to-end tests (test_policies.py,
test_automation.py): policy files written atomically, reloads, the reload metrics, the
/admin/policies view, signed webhook requests, and a few policy texts shared by the tests.

Built on harness.py and apihelpers.py only; it changes nothing there."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

import requests

import harness
from apihelpers import Api, api_for, metric, ok_json, scrape
from harness import query_dicts

REPO = harness.REPO
EXAMPLES = REPO / "policies" / "examples"

# The error line eventsink logs when a reload fails (the old policies stay).
RELOAD_FAILED_LOG = r"policy reload failed"


# --------------------------------------------------------------------------------------
# policy files
# --------------------------------------------------------------------------------------

def write_policy(path: Path, text: str) -> Path:
    """Writes a policy file atomically (a reload never reads half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def sha256_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def route_policy(dlq_tenants: Sequence[str] = (), reason: str | None = None) -> str:
    """A policy (describe + route) like default.lua whose route also sends the tenants in
    dlq_tenants to the DLQ: with reason None the route says only "dlq" (reason
    policy_route, no detail)."""
    tenants = ", ".join(f"[{harness.lua_str(t)}] = true" for t in dlq_tenants)
    ret = '"dlq"' if reason is None else f'"dlq", {harness.lua_str(reason)}'
    return f"""-- written by the policy tests
local null = sink.json.null
local DLQ_TENANTS = {{ {tenants} }}
local function present(v) return v ~= nil and v ~= null end
return {{
  describe = function(ev)
    local p = ev.payload
    if type(p) ~= "table" then return nil, nil end
    local t = p.event_type
    if not present(t) then t = p.type end
    return present(p.tenant_id) and p.tenant_id or nil, present(t) and t or nil
  end,
  route = function(ev, info)
    if info.tenant_id == nil then return "dlq", "missing_tenant" end
    if DLQ_TENANTS[info.tenant_id] then return {ret} end
    return nil
  end,
}}
"""


# --------------------------------------------------------------------------------------
# reloads, /admin/policies, metrics
# --------------------------------------------------------------------------------------

def reload(api: Api) -> requests.Response:
    return api.post("/admin/reload", timeout=60)


def policies_status(api: Api) -> dict:
    return ok_json(api.get("/admin/policies"))


def reload_count(sink: harness.SinkProcess, result: str) -> float:
    """eventsink_policy_reloads_total{result=...}; 0 while the series is absent."""
    return metric(scrape(sink), "eventsink_policy_reloads_total", result=result) or 0.0


def wait_reload_count(sink: harness.SinkProcess, result: str, expected: float,
                      timeout: float = 30) -> float:
    last = None

    def check():
        nonlocal last
        last = reload_count(sink, result)
        return last == expected
    try:
        harness.wait_for(check, timeout, what=f"eventsink_policy_reloads_total{{result={result!r}}}"
                                              f" == {expected}")
    except AssertionError as e:
        raise AssertionError(f"{e}; last value {last}") from None
    return last


# --------------------------------------------------------------------------------------
# storage
# --------------------------------------------------------------------------------------

def journal_at(dsn: str, topic: str, positions: Sequence[tuple[int, int]]) -> list[dict]:
    """Journal rows at these Kafka positions of topic."""
    if not positions:
        return []
    parts = [p for p, _ in positions]
    offs = [o for _, o in positions]
    return query_dicts(dsn, "SELECT j.* FROM event_journal j JOIN unnest(%s::int[], %s::bigint[])"
                            " AS u(p, o) ON j.kafka_partition = u.p AND j.kafka_offset = u.o"
                            " WHERE j.topic = %s ORDER BY j.id", (parts, offs, topic))


def dlq_at(dsn: str, topic: str, positions: Sequence[tuple[int, int]]) -> list[dict]:
    if not positions:
        return []
    parts = [p for p, _ in positions]
    offs = [o for _, o in positions]
    return query_dicts(dsn, "SELECT d.* FROM dead_letter_queue d JOIN unnest(%s::int[], %s::bigint[])"
                            " AS u(p, o) ON d.kafka_partition = u.p AND d.kafka_offset = u.o"
                            " WHERE d.topic = %s ORDER BY d.id", (parts, offs, topic))


# --------------------------------------------------------------------------------------
# signed webhooks
# --------------------------------------------------------------------------------------

def webhook_signature(secret: str, ts: int | str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), str(ts).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def signed_request(secret: str, payload: Any, ts: int | None = None) -> tuple[bytes, dict]:
    """The body bytes and headers of a signed POST /webhooks/replay."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    ts = int(time.time()) if ts is None else ts
    headers = {"Content-Type": "application/json",
               "X-Eventsink-Timestamp": str(ts),
               "X-Eventsink-Signature": webhook_signature(secret, ts, body)}
    return body, headers


def post_webhook(api: Api, body: bytes, headers: dict) -> requests.Response:
    """POST /webhooks/replay with exactly these bytes and headers, and no bearer token."""
    return api.post("/webhooks/replay", data=body, headers=headers, token=None)


__all__ = ["EXAMPLES", "RELOAD_FAILED_LOG", "REPO", "api_for", "dlq_at", "journal_at",
           "policies_status", "post_webhook", "reload", "reload_count", "route_policy",
           "sha256_of", "signed_request", "wait_reload_count", "webhook_signature",
           "write_policy"]
