"""End-to-end tests of the operator commands (CONTRACT 9.4): `eventsink events|replay|jobs|
dlq|reload|status` against the running service, with real PostgreSQL and Kafka.

Each command is run in both forms: `--json` (one JSON document, compared with the API's own
answer or with SQL) and the table people read. Output to a pipe carries no escape codes;
on a terminal (a pseudo-terminal here) tables fit its width and `--wait`/`jobs watch` draw
a live progress line. Exit codes: 0 success, 1 unreachable/5xx/a job that ended failed,
2 usage or a 4xx."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time

import harness
from apihelpers import OPS_TOKEN, TOKENS_OVERRIDE, VIEWER_TOKEN, api_for, listen_address, \
    local_url, ok_json, wait_job
from harness import event_records, make_event, query, scalar, wait_rows

JOURNAL_COUNT = "SELECT count(*) FROM event_journal"
ESC = "\x1b"


def _env(token: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "EVENTSINK_TOKEN"}
    if token:
        env["EVENTSINK_TOKEN"] = token
    return env


def cli(*args: str, token: str | None = None, timeout: float = 120,
        stdin: str | None = None) -> subprocess.CompletedProcess:
    """eventsink ARGS with stdout and stderr to pipes (not a terminal)."""
    r = subprocess.run([str(harness.eventsink_bin()), *args], capture_output=True,
                       timeout=harness.scaled(timeout), env=_env(token),
                       input=stdin.encode() if stdin is not None else None,
                       stdin=None if stdin is not None else subprocess.DEVNULL)
    out = subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(errors="replace"),
                                      r.stderr.decode(errors="replace"))
    san = harness.sanitizer_lines(out.stdout + out.stderr)
    assert not san, f"sanitizer report from eventsink {' '.join(args)}:\n{out.stderr[-4000:]}"
    return out


def cli_tty(*args: str, token: str | None = None, cols: int = 100,
            timeout: float = 120) -> tuple[int, str]:
    """eventsink ARGS with stdout on a pseudo-terminal `cols` wide; (exit code, output)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, cols, 0, 0))
    p = subprocess.Popen([str(harness.eventsink_bin()), *args], stdout=slave,
                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=_env(token))
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + harness.scaled(timeout)
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the other side closed
                break
            if not data:
                break
            chunks.append(data)
        elif p.poll() is not None:
            break
    os.close(master)
    rc = p.wait(timeout=30)
    err = p.stderr.read().decode()
    assert not harness.sanitizer_lines(err), err[-4000:]
    return rc, b"".join(chunks).decode()


def api_url(s) -> str:
    return local_url(listen_address(s, "http"))


def _journal(db, n_acme=20, n_initech=10):
    events = [make_event(i, tenant="acme", event_type="lead.created") for i in range(n_acme)]
    events += [make_event(100 + i, tenant="initech", event_type="deal.won")
               for i in range(n_initech)]
    return events


def _table(text: str) -> tuple[list[str], list[list[str]]]:
    """A table's header words and its rows' cells (split on two or more spaces)."""
    lines = [l for l in text.splitlines() if l.strip()]
    head = re.split(r"\s{2,}", lines[0].strip())
    return head, [re.split(r"\s{2,}", l.strip()) for l in lines[1:]]


# --------------------------------------------------------------------------------------
# events: latest with filters and paging, get, lineage
# --------------------------------------------------------------------------------------

def test_events_latest_pages_and_filters_agree_with_sql(kafka, db, topic, sink):
    s = sink(topics=[topic], dsn=db)
    kafka.produce(topic, event_records(_journal(db)))
    wait_rows(db, JOURNAL_COUNT, 30, sinks=[s])
    api = api_for(s)
    base = api_url(s)
    newest = [r[0] for r in query(db, "SELECT id FROM event_journal ORDER BY id DESC")]

    # --json: the API's own answer, one document with one trailing newline
    r = cli("events", "latest", "--limit", "5", "--json", "--api", base)
    assert r.returncode == 0, r.stderr
    assert r.stdout.endswith("}\n") and r.stdout.count("\n") == 1 and ESC not in r.stdout
    got = json.loads(r.stdout)
    assert [e["id"] for e in got["events"]] == newest[:5]
    assert got == ok_json(api.get("/events/latest", params={"limit": 5}))

    # a table to a pipe: no escape codes, the next page named on stderr
    r = cli("events", "latest", "--limit", "5", "-c", str(s.config_path))
    assert r.returncode == 0, r.stderr
    assert ESC not in r.stdout + r.stderr
    head, rows = _table(r.stdout)
    assert head[:4] == ["id", "received", "tenant", "type"], head
    assert [int(row[0]) for row in rows] == newest[:5]
    m = re.search(r"--before-id (\d+)", r.stderr)
    assert m and int(m.group(1)) == newest[4], r.stderr
    page2 = json.loads(cli("events", "latest", "--limit", "5", "--before-id", m.group(1),
                           "--json", "--api", base).stdout)
    assert [e["id"] for e in page2["events"]] == newest[5:10]

    # filters: tenant, event type, originals, a time window
    want = [r[0] for r in query(db, "SELECT id FROM event_journal WHERE tenant_id = 'initech'"
                                    " AND event_type = 'deal.won' ORDER BY id DESC")]
    got = json.loads(cli("events", "latest", "--tenant", "initech", "--event-type", "deal.won",
                         "--originals", "--limit", "100", "--json", "--api", base).stdout)
    assert [e["id"] for e in got["events"]] == want and len(want) == 10
    got = json.loads(cli("events", "latest", "--since", "1h", "--until", "2100-01-01T00:00:00Z",
                         "--limit", "100", "--json", "--api", base).stdout)
    assert len(got["events"]) == 30
    got = json.loads(cli("events", "latest", "--until", "1h", "--json", "--api", base).stdout)
    assert got["events"] == []

    # get and lineage
    r = cli("events", "get", str(newest[0]), "--api", base)
    assert r.returncode == 0, r.stderr
    fields = dict(re.split(r"\s{2,}", l.strip(), maxsplit=1) for l in r.stdout.splitlines())
    assert fields["id"] == str(newest[0]) and fields["tenant_id"] in ("acme", "initech")
    assert json.loads(fields["payload"])["tenant_id"] == fields["tenant_id"]
    got = json.loads(cli("events", "lineage", str(newest[0]), "--json", "--api", base).stdout)
    assert got == ok_json(api.get(f"/events/{newest[0]}/lineage"))
    r = cli("events", "lineage", str(newest[0]), "--api", base)
    assert r.returncode == 0 and "ancestors" in r.stdout and "descendants" in r.stdout


def test_exit_codes_for_4xx_5xx_an_unreachable_api_and_usage(db, topic, sink):
    dead = harness.free_port()  # nothing listens there: Kafka is unreachable for the service
    s = sink(topics=[topic], dsn=db, overrides={"kafka": {"brokers": f"127.0.0.1:{dead}"}},
             allow_errors=True)
    base = api_url(s)
    harness.wait_for(lambda: scalar(db, "SELECT count(*) FROM schema_migrations") > 0, 60,
                     what="the migrations")
    ev_id = scalar(db, "INSERT INTO event_journal (tenant_id, event_type, topic, kafka_partition,"
                       " kafka_offset, event_key, headers, payload) VALUES ('acme', "
                       "'lead.created', %s, 0, 0, 'k', '{}', %s) RETURNING id",
                   (topic, json.dumps(make_event(1, tenant="acme"))))

    r = cli("events", "get", "999999", "--api", base)  # 404
    assert r.returncode == 2 and "not_found" in r.stderr and "HTTP 404" in r.stderr, r
    r = cli("replay", str(ev_id), "--api", base, timeout=180)  # Kafka down: 503
    assert r.returncode == 1 and "kafka_unavailable" in r.stderr and "HTTP 503" in r.stderr, r
    r = cli("status", "--api", f"http://127.0.0.1:{harness.free_port()}")  # nobody there
    assert r.returncode == 1 and "did not answer" in r.stderr, r

    usage = [
        ("replay", "range", "--api", base),                    # no range
        ("replay", "range", "--since", "1h", "--from-id", "1", "--to-id", "2", "--api", base),
        ("replay", "range", "--from-id", "5", "--api", base),  # half a range
        ("replay", "range", "--since", "yesterday", "--api", base),
        ("jobs", "list", "--rate", "5", "--api", base),        # not an option of jobs
        ("jobs", "show", "x", "--api", base),
        ("dlq", "retry", "--api", base),                       # neither an id nor a filter
        ("events", "latest", "--bogus", "--api", base),
        ("events", "get", "1", "--token", "s3cret", "--api", base),
        ("frobnicate", "--api", base),
        ("replay", "batch", "--ids-file", "/dev/null", "--dry-run", "--api", base),  # not batch's
        ("replay", "range", "--since", "1h", "--ids-file", "/dev/null", "--api", base),
        ("replay", "range", "--since", "1h", "--wait", "--timeout", "soon", "--api", base),
        ("replay", "range", "--since", "1h", "--timeout", "5s", "--api", base),  # no --wait
        ("replay", "range", "--since", "1h", "--dry-run", "--wait", "--api", base),
        ("replay", "range", "--from-id", "1", "--to-id", "x9", "--api", base),
        ("status", "-c", "sink.conf.lua", "--api", base),
        ("events", "latest", "--tenant", "\udcff", "--api", base),  # not UTF-8
    ]
    for args in usage:
        r = cli(*args)
        assert r.returncode == 2 and r.stderr.startswith("eventsink: "), (args, r)
        assert "s3cret" not in r.stdout + r.stderr
    r = cli("events", "get", "1", "--token", "s3cret", "--api", base)
    assert "EVENTSINK_TOKEN" in r.stderr and "--token-file" in r.stderr, r.stderr
    # a token that would add a header line is refused, not sent
    r = cli("events", "get", "1", "--api", base, token="t\r\nX-Injected: 1")
    assert r.returncode == 2 and "control character" in r.stderr, r
    # numbers are sent as numbers ("001" is 1); nothing of a refused run was started
    r = cli("replay", "range", "--from-id", "001", "--to-id", str(ev_id), "--dry-run", "--json",
            "--api", base)
    assert r.returncode == 0 and json.loads(r.stdout)["matched"] == 1, r
    assert scalar(db, "SELECT count(*) FROM replay_jobs WHERE kind <> 'single'") == 0
    # the server's words reach the terminal without their control characters
    r = cli("dlq", "list", "--status", "bad\x1b]0;owned\x07", "--api", base)
    assert r.returncode == 2 and "HTTP 400" in r.stderr and ESC not in r.stderr, r
    # without --api and without a readable configuration file: a usage error, not a guess
    r = cli("status", "-c", "/nonexistent/sink.conf.lua")
    assert r.returncode == 2 and "--api" in r.stderr, r
    # $EVENTSINK_API stands for --api, unless -c names the file to read it from
    env = dict(_env(None), EVENTSINK_API=base)
    r = subprocess.run([str(harness.eventsink_bin()), "events", "get", "999999"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "HTTP 404" in r.stderr, r
    r = subprocess.run([str(harness.eventsink_bin()), "status", "-c", "/nonexistent.lua"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no API address" in r.stderr, r

    for cmd in ("events", "replay", "jobs", "dlq", "reload", "status"):
        r = cli(cmd, "--help")
        assert r.returncode == 0 and f"usage: eventsink {cmd}" in r.stdout, (cmd, r)
        assert "Exit codes" in r.stdout and ESC not in r.stdout
    r = cli("--help")
    assert r.returncode == 0 and "events|replay|jobs|dlq|reload|status" in r.stdout


# --------------------------------------------------------------------------------------
# replays and jobs
# --------------------------------------------------------------------------------------

def test_outage_recovery_is_one_range_replay_by_ids_with_wait(kafka, db, topic, sink, tmp_path):
    s = sink(topics=[topic], dsn=db, overrides=TOKENS_OVERRIDE)
    kafka.produce(topic, event_records([make_event(i, tenant="acme") for i in range(60)]))
    wait_rows(db, JOURNAL_COUNT, 60, sinks=[s])
    ids = [r[0] for r in query(db, "SELECT id FROM event_journal ORDER BY id")]
    lo, hi = ids[5], ids[55]
    conf = str(s.config_path)

    # the token comes from the environment or a file; without one the API says 401: exit 2
    r = cli("replay", "range", "--from-id", str(lo), "--to-id", str(hi), "--dry-run", "-c", conf)
    assert r.returncode == 2 and "HTTP 401" in r.stderr, r
    tf = tmp_path / "token"
    tf.write_text(OPS_TOKEN + "\n")
    r = cli("replay", "range", "--from-id", str(lo), "--to-id", str(hi), "--dry-run",
            "--token-file", str(tf), "-c", conf)
    assert r.returncode == 0 and "matches 51 event(s)" in r.stdout, r
    # a viewer may look but not replay: 403, exit 2
    r = cli("replay", "range", "--from-id", str(lo), "--to-id", str(hi), "-c", conf,
            token=VIEWER_TOKEN)
    assert r.returncode == 2 and "HTTP 403" in r.stderr, r

    r = cli("replay", "range", "--from-id", str(lo), "--to-id", str(hi), "--reason",
            "outage recovery", "--wait", "-c", conf, token=OPS_TOKEN)
    assert r.returncode == 0, r
    assert ESC not in r.stdout
    job_id = int(re.search(r"range replay: job (\d+), 51 event\(s\)", r.stdout).group(1))
    assert re.search(rf"job {job_id} done: 51 of 51 succeeded, 0 failed", r.stdout), r.stdout
    wait_rows(db, f"SELECT count(*) FROM event_journal WHERE replay_job_id = {job_id}", 51,
              sinks=[s])
    replayed = [r[0] for r in query(db, "SELECT replayed_from_event_id FROM event_journal "
                                        f"WHERE replay_job_id = {job_id} ORDER BY 1")]
    assert replayed == ids[5:56]
    job = json.loads(cli("jobs", "show", str(job_id), "--json", "-c", conf, token=OPS_TOKEN).stdout)
    assert (job["status"], job["reason"], job["params"]["from_id"]) == ("done", "outage recovery",
                                                                        lo)

    # several ids are one batch job; --json --wait prints the final job and nothing else
    r = cli("replay", str(ids[0]), str(ids[1]), str(ids[2]), "--wait", "--json", "-c", conf,
            token=OPS_TOKEN)
    assert r.returncode == 0, r
    job = json.loads(r.stdout)
    assert (job["kind"], job["status"], job["succeeded"]) == ("batch", "done", 3), job
    # one id: replayed at once, its Kafka position printed
    r = cli("replay", str(ids[3]), "--reason", "check", "-c", conf, token=OPS_TOKEN)
    assert r.returncode == 0 and re.search(r"kafka\s+\{\"topic\":", r.stdout), r
    # a batch from a file (and from stdin)
    idf = tmp_path / "ids.txt"
    idf.write_text(f"{ids[10]}, {ids[11]}\n{ids[12]}\n")
    r = cli("replay", "batch", "--ids-file", str(idf), "--wait", "--json", "-c", conf,
            token=OPS_TOKEN)
    assert r.returncode == 0 and json.loads(r.stdout)["succeeded"] == 3, r
    r = cli("replay", "batch", "--ids-file", "-", "--json", "-c", conf, token=OPS_TOKEN,
            stdin=f"{ids[20]}\n")
    assert r.returncode == 0 and json.loads(r.stdout)["total"] == 1, r
    idf.write_text("12 abc\n")
    r = cli("replay", "batch", "--ids-file", str(idf), "-c", conf, token=OPS_TOKEN)
    assert r.returncode == 2 and '"abc"' in r.stderr, r

    # jobs list, in both forms
    listed = json.loads(cli("jobs", "list", "--json", "-c", conf, token=OPS_TOKEN).stdout)
    assert job_id in [j["id"] for j in listed["jobs"]]
    head, rows = _table(cli("jobs", "list", "-c", conf, token=OPS_TOKEN).stdout)
    assert head[:3] == ["id", "kind", "status"]
    assert [int(row[0]) for row in rows] == [j["id"] for j in listed["jobs"]]


def _watch_lines(text: str, job_id: int) -> list[tuple[int, int, float]]:
    """(done, total, rate) of each progress line of job_id."""
    out = []
    for m in re.finditer(rf"job {job_id} running .*?(\d+)/(\d+) [\d.]+%.*? ([\d.]+)/s ETA", text):
        out.append((int(m.group(1)), int(m.group(2)), float(m.group(3))))
    return out


def test_jobs_watch_shows_progress_of_a_slow_job_and_wait_ends_with_it(kafka, db, topic, sink):
    s = sink(topics=[topic], dsn=db)
    kafka.produce(topic, event_records([make_event(i, tenant="acme") for i in range(80)]))
    wait_rows(db, JOURNAL_COUNT, 80, sinks=[s])
    base = api_url(s)
    api = api_for(s)
    ids = [r[0] for r in query(db, "SELECT id FROM event_journal ORDER BY id")]

    # 80 events at 10 a second: eight seconds, watched to a pipe
    started = json.loads(cli("replay", "range", "--from-id", str(ids[0]), "--to-id",
                             str(ids[-1]), "--rate", "10", "--json", "--api", base).stdout)
    job_id = started["job_id"]
    r = cli("jobs", "watch", str(job_id), "--api", base)
    assert r.returncode == 0, r
    assert ESC not in r.stdout and "\r" not in r.stdout
    lines = _watch_lines(r.stdout, job_id)
    assert len(lines) >= 3, r.stdout
    dones = [d for d, _, _ in lines]
    assert dones == sorted(dones) and all(t == 80 for _, t, _ in lines), lines
    rates = sorted(rate for _, _, rate in lines if rate > 0)
    assert rates, lines
    median = rates[len(rates) // 2]
    assert 3 <= median <= 30, f"rate {median}/s for a job kept to 10/s: {lines}"
    assert re.search(rf"job {job_id} done: 80 of 80 succeeded, 0 failed", r.stdout), r.stdout
    assert wait_job(api, job_id)["status"] == "done"

    # on a terminal: one line redrawn in place, with a bar and an ETA
    rc, out = cli_tty("replay", "range", "--from-id", str(ids[0]), "--to-id", str(ids[29]),
                      "--rate", "10", "--wait", "--api", base)
    assert rc == 0, out
    assert "\r\x1b[2K" in out and re.search(r"\[#*-*\] \d+/30", out), out
    assert re.search(r"ETA \d+s", out) and re.search(r"done: 30 of 30 succeeded", out), out

    # cancel a slow job; --wait on it ends with the job, and exit 1 (it did not finish)
    started = json.loads(cli("replay", "range", "--from-id", str(ids[0]), "--to-id",
                             str(ids[-1]), "--rate", "2", "--json", "--api", base).stdout)
    watcher = subprocess.Popen([str(harness.eventsink_bin()), "jobs", "watch",
                                str(started["job_id"]), "--api", base],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(None))
    time.sleep(1)  # let the watcher see the job running; its end is what is asserted
    r = cli("jobs", "cancel", str(started["job_id"]), "--api", base)
    assert r.returncode == 0 and re.search(r"status\s+cancelled", r.stdout), r
    out, err = watcher.communicate(timeout=harness.scaled(60))
    assert watcher.returncode == 1, (out, err)
    assert re.search(rf"job {started['job_id']} cancelled", out.decode()), out
    r = cli("jobs", "cancel", str(started["job_id"]), "--api", base)
    assert r.returncode == 2 and "HTTP 409" in r.stderr, r
    # --timeout bounds the wait
    slow = json.loads(cli("replay", "range", "--from-id", str(ids[0]), "--to-id", str(ids[-1]),
                          "--rate", "1", "--json", "--api", base).stdout)
    r = cli("jobs", "watch", str(slow["job_id"]), "--timeout", "2s", "--api", base)
    assert r.returncode == 1 and "--timeout 2s" in r.stderr, r
    cli("jobs", "cancel", str(slow["job_id"]), "--api", base)


# --------------------------------------------------------------------------------------
# the dead-letter queue, reload, status, tables on a terminal
# --------------------------------------------------------------------------------------

def test_dlq_commands_and_a_retry_that_fails_again_exits_1(kafka, db, topic, sink):
    s = sink(topics=[topic], dsn=db)
    base = api_url(s)
    api = api_for(s)
    no_tenant = [(f"nt-{i}", json.dumps({"event_type": "lead.created", "seq": i}).encode(),
                  None, None) for i in range(3)]
    kafka.produce(topic, event_records([make_event(1, tenant="acme")]) + no_tenant)
    wait_rows(db, "SELECT count(*) FROM dead_letter_queue", 3, sinks=[s])
    dlq = [r[0] for r in query(db, "SELECT id FROM dead_letter_queue ORDER BY id DESC")]

    got = json.loads(cli("dlq", "list", "--reason", "missing_tenant", "--json", "--api",
                         base).stdout)
    assert got == ok_json(api.get("/dlq", params={"reason": "missing_tenant"}))
    assert [d["id"] for d in got["entries"]] == dlq
    head, rows = _table(cli("dlq", "list", "--api", base).stdout)
    assert head[:4] == ["id", "created", "status", "reason"]
    assert [(int(r[0]), r[2], r[3]) for r in rows] == [(i, "pending", "missing_tenant")
                                                        for i in dlq]
    page = json.loads(cli("dlq", "list", "--before-id", str(dlq[0]), "--json", "--api",
                          base).stdout)
    assert [d["id"] for d in page["entries"]] == dlq[1:]
    r = cli("dlq", "show", str(dlq[0]), "--api", base)
    assert r.returncode == 0 and re.search(r"reason\s+missing_tenant", r.stdout), r

    # they fail again: the job says so, and --wait exits 1
    r = cli("dlq", "retry", "--reason", "missing_tenant", "--why", "tenant map fixed?",
            "--wait", "--api", base)
    assert r.returncode == 1, r
    job_id = int(re.search(r"DLQ retry: job (\d+)", r.stdout).group(1))
    assert re.search(rf"job {job_id} failed: 0 of 3 succeeded, 3 failed", r.stdout), r.stdout
    assert ok_json(api.get(f"/replay/jobs/{job_id}"))["reason"] == "tenant map fixed?"
    harness.wait_for(lambda: scalar(db, "SELECT min(attempts) FROM dead_letter_queue") == 1,
                     60, what="every entry to count one attempt")

    r = cli("dlq", "discard", str(dlq[0]), "--json", "--api", base)
    assert r.returncode == 0 and json.loads(r.stdout) == {"id": dlq[0], "status": "discarded"}
    r = cli("dlq", "retry", str(dlq[0]), "--api", base)
    assert r.returncode == 2 and "HTTP 409" in r.stderr, r
    r = cli("dlq", "retry", str(dlq[1]), "--wait", "--json", "--api", base)
    assert r.returncode == 1 and json.loads(r.stdout)["failed"] == 1, r


def test_reload_status_and_tables_on_a_narrow_terminal(kafka, db, topic, sink):
    s = sink(topics=[topic], dsn=db)
    base = api_url(s)
    tenant = "evil\x1b[31mred\x07"
    kafka.produce(topic, event_records([make_event(i, tenant="acme") for i in range(5)]
                                       + [make_event(9, tenant=tenant)]))
    wait_rows(db, JOURNAL_COUNT, 6, sinks=[s])

    r = cli("reload", "--api", base)
    assert r.returncode == 0 and re.search(r"policies reloaded: version 2", r.stdout), r
    assert json.loads(cli("reload", "--json", "--api", base).stdout)["policy_version"] == 3

    r = cli("status", "--api", base)
    assert r.returncode == 0, r
    assert re.search(r"service\s+ok", r.stdout) and re.search(r"postgres\s+up", r.stdout)
    assert re.search(r"kafka\s+up", r.stdout) and re.search(r"policies\s+version 3", r.stdout)
    assert re.search(r"events\s+6 original, 0 replayed", r.stdout), r.stdout
    st = json.loads(cli("status", "--json", "--api", base).stdout)
    assert st["health"]["status"] == "ok" and st["events"]["original"] == 6
    assert st["journal"]["latest_id"] == scalar(db, "SELECT max(id) FROM event_journal")

    # a terminal 60 columns wide: every line fits, cut cells end in "…"; the tenant's escape
    # codes are shown as '?', never sent to the terminal
    rc, out = cli_tty("events", "latest", "--api", base, cols=60)
    assert rc == 0, out
    lines = out.replace("\r\n", "\n").strip("\n").split("\n")
    assert len(lines) == 7 and all(len(l) <= 60 for l in lines), lines
    assert "…" in out and ESC not in out and "\x07" not in out, out
    r = cli("events", "latest", "--json", "--api", base)
    assert ESC not in r.stdout and "\\u001b[31m" in r.stdout  # JSON escapes it
    r = cli("events", "latest", "--api", base)
    assert "evil?[31mred?" in r.stdout and ESC not in r.stdout
