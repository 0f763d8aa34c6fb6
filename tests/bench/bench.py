#!/usr/bin/env python3
"""The eventsink benchmark (issue 8), run by tests/bench/run.sh, which builds the service and
starts a private PostgreSQL and Kafka broker first, and stops them afterwards.

    bench.py run --dir .bench --pg-port P --kafka-port K    the whole benchmark
    bench.py sample OUT INTERVAL NAME=PID...                 RSS/CPU sampler (child process)
    bench.py produce-paced BOOTSTRAP TOPIC RATE SECONDS      paced latency producer (child)

Phases of `run` (each bounded in time, each failing with a clear message):
  1. topics (12 partitions) and BENCH_EVENTS ApexFlow CRM events produced before the service
     starts (1 % replay-marked, 0.1 % poison);
  2. throughput: the service consumes them; first to last row commit time
     (pg_xact_commit_timestamp), until the group's committed offsets reach the end;
  3. PostgreSQL's COPY of the same rows into an empty copy of event_journal (same indexes);
  4. latency at a steady BENCH_LATENCY_RATE events/s for BENCH_LATENCY_SECONDS;
  5. a range replay of BENCH_REPLAY_EVENTS events through POST /replay/range;
  6. the exactly-once check over every topic and partition, then SIGTERM;
  7. optional: the same throughput run with log.level "info" (BENCH_INFO_EVENTS);
  8. the policy cost per event (build/bench/policy_bench, in-process);
  9. optional (BENCH_PHASES=...,filled): a journal pre-filled by SQL with BENCH_FILL_ROWS
     rows (default 20,000,000) over BENCH_FILL_DAYS days (180): ingest of BENCH_EVENTS
     events into it against the empty journal of phase 2, and the latency of the API's
     lookups on it (/events/latest?tenant=, /events/{id}, /events/{id}/lineage, a range
     dry run over one day).
Results: a table on stdout and .bench/results-<timestamp>.json (+ .bench/latest.json).
"""
import datetime as dt
import glob
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

TOPIC = "bench.events"
LAT_TOPIC = "bench.latency"
INFO_TOPIC = "bench.info"
PARTITIONS = 12
ALL_PHASES = "copy,latency,replay,levels,policy"
OPT_PHASES = "filled"  # run only when BENCH_PHASES names them
FILL_TOPIC = "bench.filled"

TENANTS = ["acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "tyrell"]
TYPES = ["lead.created", "lead.created", "lead.updated", "lead.updated", "lead.updated",
         "lead.qualified", "deal.created", "deal.won", "deal.lost", "contact.created"]
SOURCES = ["webinar", "website", "referral", "trade-show", "cold-call", "partner"]
TEAMS = ["emea", "amer", "apac", "smb"]
FIRST = ["Dana", "Ravi", "Mia", "Jonas", "Aiko", "Lucas", "Zoe", "Omar", "Ines", "Theo"]
LAST = ["Whitfield", "Okafor", "Lindqvist", "Moreau", "Tanaka", "Silva", "Novak", "Haddad"]
DOMAINS = ["northwind.example", "contoso.example", "fabrikam.example", "tailspin.example"]
HEADERS = [("source", b"apexflow-crm"), ("content-type", b"application/json")]


class BenchError(Exception):
    pass


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def env_int(name, default):
    v = os.environ.get(name, "")
    if v == "":
        return default
    try:
        return int(v.replace("_", "").replace(",", ""))
    except ValueError:
        raise BenchError(f"{name}={v!r} is not an integer")


# ---- processes -------------------------------------------------------------------------------

class Children:
    """Every process the benchmark starts, with a pid file under .bench/run/ so that run.sh
    can end them even if this script is killed."""

    def __init__(self, rundir):
        self.rundir = rundir
        self.procs = []  # (name, Popen)

    def start(self, name, argv, **kw):
        kw.setdefault("start_new_session", True)
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(argv, **kw)
        with open(os.path.join(self.rundir, f"{name}.pid"), "w") as f:
            f.write(f"{p.pid}\n")
        self.procs.append((name, p))
        return p

    def forget(self, p):
        for name, q in list(self.procs):
            if q is p:
                self.procs.remove((name, q))
                try:
                    os.unlink(os.path.join(self.rundir, f"{name}.pid"))
                except FileNotFoundError:
                    pass

    def stop(self, p, sig=signal.SIGTERM, timeout=15.0):
        """Signals p, waits up to timeout, then kills it. Returns (exit code, seconds, killed)."""
        t0 = time.monotonic()
        killed = False
        if p.poll() is None:
            try:
                p.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
                killed = True
        self.forget(p)
        return p.returncode, time.monotonic() - t0, killed

    def stop_all(self):
        for name, p in reversed(list(self.procs)):
            sig = signal.SIGINT if name.startswith("perf") else signal.SIGTERM
            self.stop(p, sig=sig, timeout=12.0)


def proc_cpu_s(pid):
    """utime + stime of a live process, in seconds (None when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / CLK_TCK
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def proc_tree_cpu_s(pid):
    """CPU of a process, its reaped children and its live children (PostgreSQL's backends)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None
    total = sum(int(x) for x in parts[11:15]) / CLK_TCK
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                p = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if p[1] == str(pid):
            total += (int(p[11]) + int(p[12])) / CLK_TCK
    return total


def machine_busy_s():
    """CPU seconds all cores spent busy so far (from /proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / CLK_TCK


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        return None
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- the sampler (child process) --------------------------------------------------------------

def cmd_sample(args):
    out, interval, targets = args[0], float(args[1]), [a.split("=", 1) for a in args[2:]]
    stop = False

    def on_term(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    with open(out, "w", buffering=1) as f:
        f.write("t_wall,name,rss_kib,cpu_s\n")
        nxt = time.monotonic()
        while not stop:
            now = time.time()
            for name, pid in targets:
                r = rss_kib(int(pid))
                c = proc_cpu_s(int(pid))
                if r is not None and c is not None:
                    f.write(f"{now:.3f},{name},{r},{c:.2f}\n")
            nxt += interval
            time.sleep(max(0.0, nxt - time.monotonic()))


def read_samples(path):
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path) as f:
        next(f, None)
        for line in f:
            parts = line.strip().split(",")
            if len(parts) != 4:
                continue
            rows.append((float(parts[0]), parts[1], int(parts[2]), float(parts[3])))
    return rows


# ---- event generation ------------------------------------------------------------------------

class EventGen:
    """Deterministic ApexFlow CRM events, about 300 bytes each."""

    TEMPLATE = ('{"tenant_id":"%s","event_type":"%s","event_id":"%s","occurred_at":"%s",'
                '"lead":{"id":"L-%d","name":"%s %s","email":"%s.%s@%s","source":"%s",'
                '"score":%d},"owner":{"id":"U-%d","team":"%s"}')

    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.base = dt.datetime(2025, 11, 27, 8, 0, 0, tzinfo=dt.timezone.utc)

    def payload(self, i, extra=""):
        r = self.rng
        h = "%032x" % r.getrandbits(128)
        eid = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
        first, last = r.choice(FIRST), r.choice(LAST)
        lead = r.randrange(1, 200000)
        ts = (self.base + dt.timedelta(milliseconds=i * 7)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        body = self.TEMPLATE % (r.choice(TENANTS), r.choice(TYPES), eid, ts + "Z", lead,
                                first, last, first.lower(), last.lower(), r.choice(DOMAINS),
                                r.choice(SOURCES), r.randrange(0, 100), r.randrange(1, 400),
                                r.choice(TEAMS))
        return f"lead-{lead}", body + extra + "}"


def make_producer(bootstrap, **extra):
    from confluent_kafka import Producer
    conf = {
        "bootstrap.servers": bootstrap,
        "linger.ms": 20,
        "batch.size": 1000000,
        "queue.buffering.max.messages": 1000000,
        "queue.buffering.max.kbytes": 1048576,
        "compression.type": "none",
        "enable.idempotence": False,
        "acks": "all",
    }
    conf.update(extra)
    errors = []
    conf["error_cb"] = lambda e: errors.append(str(e))
    return Producer(conf), errors


def produce_bulk(bootstrap, topic, n, seed):
    """Produces n events as fast as possible; returns counts by kind and the rate."""
    p, errors = make_producer(bootstrap)
    failed = []

    def on_delivery(err, _msg):
        if err is not None:
            failed.append(str(err))

    gen = EventGen(seed)
    counts = {"original": 0, "replay_marked": 0, "poison": 0}
    t0 = time.monotonic()
    for i in range(n):
        if i % 1000 == 999:
            key, body = gen.payload(i)
            value = body[: len(body) // 2]  # truncated JSON: a poison message
            counts["poison"] += 1
        elif i % 100 == 50:
            parent = gen.rng.randrange(1, max(2, i // 2))
            src = ("operator_api", "scheduled", "automated")[i % 3]
            key, value = gen.payload(
                i, ',"_replayed_from_event_id":%d,"_replay_source":"%s"' % (parent, src))
            counts["replay_marked"] += 1
        else:
            key, value = gen.payload(i)
            counts["original"] += 1
        while True:
            try:
                p.produce(topic, value=value, key=key, headers=HEADERS,
                          on_delivery=on_delivery if i % 1000 == 0 else None)
                break
            except BufferError:
                p.poll(0.05)
        if i % 20000 == 0:
            p.poll(0)
            if i and i % 200000 == 0:
                log(f"  produced {i:,} of {n:,} to {topic}")
    left = p.flush(120)
    secs = time.monotonic() - t0
    if left:
        raise BenchError(f"producer: {left} message(s) still undelivered after 120 s ({errors[-3:]})")
    if failed:
        raise BenchError(f"producer: delivery failed: {failed[:3]}")
    return counts, secs


def cmd_produce_paced(args):
    """Produces RATE events/s to TOPIC for SECONDS, each with its produce time in
    "bench_ts_us" (wall clock, microseconds). Prints a JSON summary."""
    bootstrap, topic, rate, seconds = args[0], args[1], int(args[2]), float(args[3])
    stop = False

    def on_term(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    p, errors = make_producer(bootstrap, **{"linger.ms": 1})
    p.list_topics(topic, timeout=10)  # connected before the clock starts
    gen = EventGen(4242)
    sent = 0
    t0 = time.monotonic()
    t0_wall = time.time()
    while not stop:
        el = time.monotonic() - t0
        if el >= seconds:
            break
        target = min(int(el * rate) + 1, int(seconds * rate))
        while sent < target:
            key, value = gen.payload(sent, ',"bench_ts_us":%d' % (time.time_ns() // 1000))
            try:
                p.produce(topic, value=value, key=key, headers=HEADERS)
            except BufferError:
                p.poll(0.01)
                continue
            sent += 1
        p.poll(0)
        time.sleep(0.0005)
    el = time.monotonic() - t0
    left = p.flush(60)
    print(json.dumps({"sent": sent, "seconds": round(el, 3), "rate": round(sent / el, 1),
                      "start_wall": t0_wall,
                      "undelivered": left, "errors": errors[-3:]}), flush=True)
    return 0 if left == 0 else 1


# ---- Kafka helpers ----------------------------------------------------------------------------

class Kafka:
    def __init__(self, bootstrap):
        from confluent_kafka.admin import AdminClient
        self.bootstrap = bootstrap
        self.admin = AdminClient({"bootstrap.servers": bootstrap})
        self._consumers = {}

    def create_topics(self, names):
        from confluent_kafka.admin import NewTopic
        futs = self.admin.create_topics(
            [NewTopic(t, num_partitions=PARTITIONS, replication_factor=1) for t in names],
            operation_timeout=30)
        for t, f in futs.items():
            f.result(timeout=60)
        deadline = time.monotonic() + 60
        while True:
            md = self.admin.list_topics(timeout=10)
            ok = all(t in md.topics and len(md.topics[t].partitions) == PARTITIONS and
                     all(p.leader >= 0 for p in md.topics[t].partitions.values()) for t in names)
            if ok:
                return
            if time.monotonic() > deadline:
                raise BenchError(f"topics {names} did not get {PARTITIONS} led partitions in 60 s")
            time.sleep(0.2)

    def _consumer(self, group):
        from confluent_kafka import Consumer
        if group not in self._consumers:
            self._consumers[group] = Consumer({
                "bootstrap.servers": self.bootstrap, "group.id": group,
                "enable.auto.commit": False, "session.timeout.ms": 10000})
        return self._consumers[group]

    @staticmethod
    def _retry(what, fn, seconds=60):
        """Kafka answers some requests with retriable errors for a while (a coordinator
        loading, a leader moving): retried for up to `seconds`."""
        from confluent_kafka import KafkaException
        deadline = time.monotonic() + seconds
        while True:
            try:
                return fn()
            except KafkaException as e:
                if time.monotonic() > deadline:
                    raise BenchError(f"timeout: Kafka kept failing {what} for {seconds} s: {e}")
                time.sleep(0.5)

    def watermarks(self, topic):
        from confluent_kafka import TopicPartition
        c = self._consumer("bench-watermarks")
        return self._retry(f"to give the end offsets of {topic}", lambda: {
            p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
            for p in range(PARTITIONS)})

    def committed(self, group, topic):
        from confluent_kafka import TopicPartition
        c = self._consumer(group)
        res = self._retry(f"to give the committed offsets of group {group}", lambda: c.committed(
            [TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10))
        return {tp.partition: tp.offset for tp in res}

    def close(self):
        for c in self._consumers.values():
            try:
                c.close()
            except Exception:
                pass


# ---- PostgreSQL helpers -----------------------------------------------------------------------

def pg_connect(port, dbname="eventsink", autocommit=True):
    import psycopg
    return psycopg.connect(host="127.0.0.1", port=port, dbname=dbname, user="eventsink",
                           autocommit=autocommit, connect_timeout=10)


def q1(conn, sql, params=None):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchone()


def qall(conn, sql, params=None):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


# ---- the service --------------------------------------------------------------------------------

def write_config(path, *, kafka_port, pg_port, dbname, group, topics, http_port, metrics_port,
                 batch, max_wait_ms, level, journal_retention=None):
    lua_topics = ", ".join(f'"{t}"' for t in topics)
    retention = (f'  retention = {{ journal = "{journal_retention}" }},\n'
                 if journal_retention else "")
    with open(path, "w") as f:
        f.write(f"""-- written by tests/bench/bench.py
return {{
  kafka = {{
    brokers  = "127.0.0.1:{kafka_port}",
    group_id = "{group}",
    topics   = {{ {lua_topics} }},
  }},
  postgres = {{ dsn = "host=127.0.0.1 port={pg_port} dbname={dbname} user=eventsink" }},
  http     = {{ listen = "127.0.0.1:{http_port}" }},
  metrics  = {{ listen = "127.0.0.1:{metrics_port}" }},
  policies = {{ "{ROOT}/policies/default.lua" }},
  batch    = {{ max_events = {batch}, max_wait_ms = {max_wait_ms} }},
  replay   = {{ max_depth = 3, rate_per_s = 1000000, max_batch_ids = 10000,
               confirm_above = 100000000 }},
  log      = {{ level = "{level}", format = "text" }},
{retention}}}
""")


class Service:
    def __init__(self, name, conf, logpath, http_port, metrics_port, proc):
        self.name, self.conf, self.logpath, self.http_port, self.proc = (
            name, conf, logpath, http_port, proc)
        self.metrics_port = metrics_port
        self.pid = proc.pid

    def metric_sums(self, names):
        """Sums of the named counters on /metrics (all label sets), or None."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                        timeout=10) as r:
                text = r.read().decode()
        except (OSError, urllib.error.URLError):
            return None
        out = {n: 0.0 for n in names}
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            name = line.split("{", 1)[0].split(" ", 1)[0]
            if name in out:
                try:
                    out[name] += float(line.rsplit(" ", 1)[1])
                except ValueError:
                    pass
        return out

    def check_alive(self):
        if self.proc.poll() is not None:
            raise BenchError(f"{self.name} exited with code {self.proc.returncode}; last log "
                             f"lines:\n{tail(self.logpath)}")


def tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except FileNotFoundError:
        return "(no log)"


class Bench:
    def __init__(self, opts):
        self.o = opts
        self.dir = opts["dir"]
        self.rundir = os.path.join(self.dir, "run")
        self.logdir = os.path.join(self.dir, "logs")
        os.makedirs(self.rundir, exist_ok=True)
        os.makedirs(self.logdir, exist_ok=True)
        self.children = Children(self.rundir)
        self.kafka = Kafka(f"127.0.0.1:{opts['kafka_port']}")
        self.results = {"figures": {}, "checks": {}, "errors": []}
        self.services = []
        self.sampler = None
        self.sample_file = os.path.join(self.dir, "samples.csv")
        self.markers = {}  # phase -> (t_start_wall, t_end_wall)
        self.pg_postmaster = None
        self.kafka_pid = None

    # -- helpers --
    def wait(self, what, cond, timeout, stall=None, progress=None, poll=0.25):
        """Waits until cond() is true. progress() gives a number that must move within
        `stall` seconds. Fails with a clear message on a timeout or a dead service."""
        t0 = time.monotonic()
        last_p, last_move = None, t0
        while True:
            for s in self.services:
                s.check_alive()
            if cond():
                return time.monotonic() - t0
            now = time.monotonic()
            if progress is not None:
                p = progress()
                if p != last_p:
                    last_p, last_move = p, now
                elif stall and now - last_move > stall:
                    raise BenchError(f"timeout: {what}: no progress for {stall:.0f} s "
                                     f"(stuck at {p})")
            if now - t0 > timeout:
                raise BenchError(f"timeout: {what}: not done after {timeout:.0f} s")
            time.sleep(poll)

    def start_services(self, tag, n, *, dbname, group, topics, level, batch, max_wait_ms):
        svcs = []
        for i in range(n):
            http_port, metrics_port = free_port(), free_port()
            conf = os.path.join(self.dir, f"sink-{tag}-{i}.conf.lua")
            write_config(conf, kafka_port=self.o["kafka_port"], pg_port=self.o["pg_port"],
                         dbname=dbname, group=group, topics=topics, http_port=http_port,
                         metrics_port=metrics_port, batch=batch, max_wait_ms=max_wait_ms,
                         level=level)
            chk = subprocess.run([self.o["bin"], "check", "-c", conf], capture_output=True,
                                 text=True, timeout=30)
            if chk.returncode != 0:
                raise BenchError(f"eventsink check refused {conf}: {chk.stdout}{chk.stderr}")
            logpath = os.path.join(self.logdir, f"eventsink-{tag}-{i}.log")
            lf = open(logpath, "w")
            p = self.children.start(f"eventsink-{tag}-{i}", [self.o["bin"], "-c", conf],
                                    stdout=lf, stderr=subprocess.STDOUT)
            lf.close()
            svcs.append(Service(f"eventsink-{tag}-{i}", conf, logpath, http_port, metrics_port, p))
        self.services = svcs
        return svcs

    def stop_services(self):
        out = []
        for s in self.services:
            rc, secs, killed = self.children.stop(s.proc, timeout=15)
            out.append({"instance": s.name, "exit_code": rc, "stop_seconds": round(secs, 2),
                        "killed": killed})
            if killed or rc != 0:
                self.results["errors"].append(
                    f"{s.name}: SIGTERM gave exit code {rc} after {secs:.1f} s"
                    f"{' (killed)' if killed else ''}")
        self.services = []
        return out

    def start_sampler(self, targets):
        if self.sampler:
            self.children.stop(self.sampler)
        args = [f"{n}={p}" for n, p in targets]
        self.sampler = self.children.start(
            "sampler", [sys.executable, __file__, "sample", self.sample_file, "0.1", *args])

    def cpu_snapshot(self):
        snap = {"machine_busy": machine_busy_s(), "t": time.time(),
                "self": proc_cpu_s(os.getpid()) or 0.0}
        snap["service"] = sum(proc_cpu_s(s.pid) or 0.0 for s in self.services)
        if self.pg_postmaster:
            snap["postgres"] = proc_tree_cpu_s(self.pg_postmaster) or 0.0
        if self.kafka_pid:
            snap["kafka"] = proc_cpu_s(self.kafka_pid) or 0.0
        return snap

    @staticmethod
    def cpu_delta(a, b):
        d = {k: round(b[k] - a[k], 2) for k in a if k != "t" and k in b}
        d["wall_s"] = round(b["t"] - a["t"], 2)
        d["other_s"] = round(d["machine_busy"] - d.get("service", 0) - d.get("postgres", 0)
                             - d.get("kafka", 0) - d.get("self", 0), 2)
        return d

    BATCH_METRICS = ["eventsink_batch_duration_seconds_sum", "eventsink_batch_duration_seconds_count",
                     "eventsink_batch_size_sum", "eventsink_batch_size_count"]

    def batch_metrics(self):
        tot = {k: 0.0 for k in self.BATCH_METRICS}
        for s in self.services:
            m = s.metric_sums(self.BATCH_METRICS) or {}
            for k, v in m.items():
                tot[k] += v
        return tot

    def flush_breakdown(self, conn, m0, m1, topic, where="", params=()):
        """Average batch: rows, service flush time (PostgreSQL write + Kafka offset commit,
        from the service's histogram) and PostgreSQL transaction time (commit time minus
        received_at = now() at BEGIN)."""
        n = m1["eventsink_batch_duration_seconds_count"] - m0["eventsink_batch_duration_seconds_count"]
        d = m1["eventsink_batch_duration_seconds_sum"] - m0["eventsink_batch_duration_seconds_sum"]
        rows = m1["eventsink_batch_size_sum"] - m0["eventsink_batch_size_sum"]
        pg = q1(conn, f"""
            SELECT avg(extract(epoch FROM ts - r)) * 1000, count(*) FROM (
              SELECT DISTINCT xmin::text, pg_xact_commit_timestamp(xmin) AS ts, received_at AS r
                FROM event_journal WHERE topic = %s {where}) t""", (topic, *params))
        out = {"batches": int(n), "avg_rows": round(rows / n, 1) if n else None,
               "avg_flush_ms": round(d / n * 1000, 2) if n else None,
               "avg_pg_transaction_ms": round(float(pg[0]), 2) if pg[0] is not None else None}
        if n and pg[0] is not None:
            out["avg_flush_minus_pg_ms"] = round(d / n * 1000 - float(pg[0]), 2)
        return out

    def committed_total(self, group, topic, ends):
        c = self.kafka.committed(group, topic)
        return sum(max(0, min(c.get(p, -1), ends[p][1]) - ends[p][0]) for p in ends), c

    def wait_consumed(self, what, group, topic, ends, timeout):
        total = sum(hi - lo for lo, hi in ends.values())
        state = {"done": 0}

        def progress():
            state["done"], _ = self.committed_total(group, topic, ends)
            return state["done"]

        def cond():
            progress()
            return state["done"] >= total

        self.wait(what, cond, timeout=timeout, stall=self.o["stall"], progress=progress)
        return time.time()

    def commit_span(self, conn, topic, *, extra_where="", params=()):
        """Rows of a topic (journal + DLQ) with their first and last commit times."""
        row = q1(conn, f"""
            WITH t AS (
              SELECT pg_xact_commit_timestamp(xmin) AS ts, xmin::text AS x
                FROM event_journal WHERE topic = %s {extra_where}
              UNION ALL
              SELECT pg_xact_commit_timestamp(xmin), xmin::text
                FROM dead_letter_queue WHERE topic = %s)
            SELECT count(*), min(ts), max(ts), count(DISTINCT x),
                   count(*) FILTER (WHERE ts = (SELECT min(ts) FROM t)),
                   count(*) FILTER (WHERE ts IS NULL)
              FROM t""", (topic, *params, topic))
        n, first, last, txns, first_rows, no_ts = row
        if no_ts:
            raise BenchError(f"{no_ts} row(s) of {topic} have no commit timestamp: is "
                             "track_commit_timestamp on?")
        return n, first, last, txns, first_rows

    # -- phases --
    def produce_phase(self):
        n = self.o["events"]
        topics = [TOPIC, LAT_TOPIC] + ([INFO_TOPIC] if self.o["info_events"] else [])
        log(f"creating topics {', '.join(topics)} ({PARTITIONS} partitions each)")
        self.kafka.create_topics(topics)
        log(f"producing {n:,} events to {TOPIC} (before the service starts)")
        counts, secs = produce_bulk(self.kafka.bootstrap, TOPIC, n, seed=1)
        ends = self.kafka.watermarks(TOPIC)
        in_topic = sum(hi - lo for lo, hi in ends.values())
        if in_topic != n:
            raise BenchError(f"{TOPIC} holds {in_topic} records after producing {n}")
        log(f"  {n:,} events in {secs:.1f} s ({n / secs:,.0f}/s); per partition "
            f"{min(hi for _, hi in ends.values()):,}..{max(hi for _, hi in ends.values()):,}")
        self.results["produce"] = {"events": n, "seconds": round(secs, 2),
                                   "rate_per_s": round(n / secs), **counts,
                                   "per_partition": {str(p): ends[p][1] for p in ends}}
        self.counts = counts
        self.ends = ends
        if self.o["info_events"]:
            ni = self.o["info_events"]
            log(f"producing {ni:,} events to {INFO_TOPIC} (for the log.level=info run)")
            ci, si = produce_bulk(self.kafka.bootstrap, INFO_TOPIC, ni, seed=2)
            self.info_counts = ci
            self.info_ends = self.kafka.watermarks(INFO_TOPIC)

    def throughput_phase(self, conn):
        n = self.o["events"]
        inst = self.o["instances"]
        log(f"starting {inst} eventsink instance(s): batch.max_events={self.o['batch']}, "
            f"max_wait_ms={self.o['max_wait_ms']}, log.level=warn")
        cpu0 = self.cpu_snapshot()
        t_start = time.time()
        self.start_services("main", inst, dbname="eventsink", group="bench", level="warn",
                            topics=[TOPIC, LAT_TOPIC], batch=self.o["batch"],
                            max_wait_ms=self.o["max_wait_ms"])
        self.start_sampler([(s.name, s.pid) for s in self.services])
        perf = None
        if self.o["perf"]:
            os.makedirs(os.path.join(self.dir, "perf"), exist_ok=True)
            pdata = os.path.join(self.dir, "perf", "throughput.data")
            perf = self.children.start("perf-record", [
                "perf", "record", "-q", "-F", "499", "-a", "-g", "-o", pdata],
                stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.logdir, "perf.log"), "w"))
        cpu_svc0 = {s.pid: proc_cpu_s(s.pid) or 0.0 for s in self.services}
        timeout = self.o["timeout_base"] + n / self.o["min_rate"]
        if perf:
            # the service's PostgreSQL backends, for a per-backend profile
            def backends():
                self.perf_backends = [r[0] for r in qall(
                    conn, "SELECT pid FROM pg_stat_activity WHERE application_name = 'eventsink'")]
                return len(self.perf_backends) >= inst
            try:
                self.wait("the service's PostgreSQL connection", backends, timeout=30)
            except BenchError:
                pass
        t_done = self.wait_consumed(f"consuming {n:,} events ({TOPIC})", "bench", TOPIC,
                                    self.ends, timeout)
        cpu1 = self.cpu_snapshot()
        cpu_svc1 = {s.pid: proc_cpu_s(s.pid) or 0.0 for s in self.services}
        if perf:
            self.children.stop(perf, sig=signal.SIGINT, timeout=60)
        self.markers["throughput"] = (t_start, t_done)
        rows, first, last, txns, first_rows = self.commit_span(conn, TOPIC)
        if rows != n:
            raise BenchError(f"{rows} rows of {TOPIC} in PostgreSQL after every offset was "
                             f"committed; expected {n}")
        span = (last - first).total_seconds()
        rate = (rows - first_rows) / span if span > 0 else float("nan")
        wall = t_done - t_start
        cpu_service = sum(cpu_svc1[p] - cpu_svc0[p] for p in cpu_svc1)
        self.results["figures"]["throughput"] = {
            "events": rows,
            "events_per_s": round(rate, 1),
            "first_commit": first.isoformat(), "last_commit": last.isoformat(),
            "commit_span_s": round(span, 3),
            "transactions": txns, "avg_rows_per_transaction": round(rows / txns, 1),
            "offsets_complete_after_last_commit_s": round(t_done - last.timestamp(), 3),
            "wall_from_process_start_s": round(wall, 2),
            "events_per_s_incl_startup": round(rows / wall, 1),
            "method": "(rows - rows of the first transaction) / (last - first row commit time, "
                      "pg_xact_commit_timestamp); journal + DLQ rows; done when the group's "
                      "committed offsets reached the end of every partition",
        }
        self.results["figures"]["throughput"]["flush"] = self.flush_breakdown(
            conn, {k: 0.0 for k in self.BATCH_METRICS}, self.batch_metrics(), TOPIC)
        per_instance = {}
        for s in self.services:
            m = s.metric_sums(["eventsink_events_consumed_total",
                               "eventsink_events_persisted_total", "eventsink_dlq_events_total"])
            per_instance[s.name] = {
                "cpu_s": round(cpu_svc1[s.pid] - cpu_svc0[s.pid], 2),
                **({k.replace("eventsink_", ""): int(v) for k, v in m.items()} if m else {})}
        self.results["figures"]["throughput"]["per_instance"] = per_instance
        self.results["figures"]["cpu"] = {
            "service_cpu_s": round(cpu_service, 2),
            "cpu_s_per_million_events": round(cpu_service / rows * 1e6, 2),
            "window": self.cpu_delta(cpu0, cpu1),
            "method": "utime+stime of the service process(es) from /proc/PID/stat, from start "
                      "until every offset was committed, scaled to 1,000,000 events; 'window' "
                      "splits the machine's busy CPU seconds between service, PostgreSQL "
                      "(postmaster tree), Kafka broker, this script and other load",
        }
        log(f"  throughput: {rate:,.0f} events/s ({rows:,} rows, {txns:,} transactions, "
            f"{span:.1f} s between first and last commit); service CPU {cpu_service:.1f} s")

    def copy_phase(self, conn):
        n = self.o["events"]
        cols = ("tenant_id, event_type, topic, kafka_partition, kafka_offset, event_key, "
                "headers, payload, replay_count, replay_source, replayed_from_event_id, "
                "replay_job_id, replayed_from_dlq_id")
        path = os.path.join(self.dir, "data", "journal.copy")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        log("exporting the journal rows for COPY")
        with conn.cursor() as cur, open(path, "wb") as f:
            with cur.copy(f"COPY (SELECT {cols} FROM event_journal WHERE topic = "
                          f"'{TOPIC}' ORDER BY id) TO STDOUT") as cp:
                for chunk in cp:
                    f.write(chunk)
        size = os.path.getsize(path)
        q1(conn, "SELECT 1")
        conn.execute("DROP SCHEMA IF EXISTS bench_copy CASCADE")
        conn.execute("CREATE SCHEMA bench_copy")
        conn.execute("CREATE TABLE bench_copy.event_journal "
                     "(LIKE public.event_journal INCLUDING ALL)")
        nidx = q1(conn, "SELECT count(*) FROM pg_indexes WHERE schemaname = 'bench_copy'")[0]
        conn.execute("CHECKPOINT")
        log(f"COPY of {size / 1e6:.0f} MB into bench_copy.event_journal ({nidx} indexes)")
        c2 = pg_connect(self.o["pg_port"], autocommit=False)
        try:
            t0 = time.monotonic()
            with c2.cursor() as cur, open(path, "rb") as f:
                with cur.copy(f"COPY bench_copy.event_journal ({cols}) FROM STDIN") as cp:
                    while True:
                        chunk = f.read(1 << 20)
                        if not chunk:
                            break
                        cp.write(chunk)
            c2.commit()
            secs = time.monotonic() - t0
        finally:
            c2.close()
        copied = q1(conn, "SELECT count(*) FROM bench_copy.event_journal")[0]
        conn.execute("DROP SCHEMA bench_copy CASCADE")
        os.unlink(path)
        rate = copied / secs
        tp = self.results["figures"]["throughput"]["events_per_s"]
        self.results["figures"]["copy"] = {
            "rows": copied, "seconds": round(secs, 3), "rows_per_s": round(rate, 1),
            "bytes": size, "indexes": nidx,
            "throughput_ratio": round(tp / rate, 3),
            "method": "client COPY FROM STDIN (1 MiB chunks over TCP, one transaction incl. "
                      "COMMIT) of the journal rows of the throughput run into an empty "
                      "CREATE TABLE ... (LIKE event_journal INCLUDING ALL), after a CHECKPOINT",
        }
        log(f"  COPY: {rate:,.0f} rows/s ({copied:,} rows in {secs:.1f} s); "
            f"throughput / COPY = {tp / rate:.2f}")
        if copied != n - self.counts["poison"]:
            self.results["errors"].append(f"COPY loaded {copied} rows, expected "
                                          f"{n - self.counts['poison']}")

    def latency_phase(self, conn):
        rate, secs, warm = self.o["lat_rate"], self.o["lat_seconds"], self.o["lat_warmup"]
        conn.execute("CHECKPOINT")  # the COPY's dirty pages are not flushed during the run
        av_sql = ("SELECT coalesce(sum(autovacuum_count), 0), coalesce(sum(autoanalyze_count), 0)"
                  " FROM pg_stat_user_tables WHERE relname IN ('event_journal', "
                  "'dead_letter_queue')")
        av0 = q1(conn, av_sql)
        av_running = [r[0] for r in qall(
            conn, "SELECT query FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'")]
        log(f"latency: producing {rate:,}/s to {LAT_TOPIC} for {warm} s of warm-up + {secs} s")
        outp = os.path.join(self.rundir, "paced.json")
        m0 = None
        with open(outp, "w") as out:
            p = self.children.start("producer-paced", [
                sys.executable, __file__, "produce-paced", self.kafka.bootstrap, LAT_TOPIC,
                str(rate), str(warm + secs)], stdout=out, stderr=open(
                    os.path.join(self.logdir, "producer-paced.log"), "w"))
            time.sleep(warm)  # the service's batch figures from the end of the warm-up on
            m0 = self.batch_metrics()
            self.wait("the paced producer", lambda: p.poll() is not None,
                      timeout=secs + 90)
        self.children.forget(p)
        with open(outp) as f:
            summary = json.loads(f.read() or "{}")
        if p.returncode != 0 or not summary:
            raise BenchError(f"paced producer failed (code {p.returncode}): "
                             f"{tail(os.path.join(self.logdir, 'producer-paced.log'))}")
        ends = self.kafka.watermarks(LAT_TOPIC)
        t_prod_end = time.time()
        self.wait_consumed(f"consuming the {summary['sent']:,} latency events", "bench",
                           LAT_TOPIC, ends, timeout=120)
        m1 = self.batch_metrics()
        t_measure = summary["start_wall"] + warm
        self.markers["latency"] = (t_measure, t_prod_end)
        cut = int(t_measure * 1e6)
        lat_sql = """((extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1e6
                      - (payload->>'bench_ts_us')::bigint) / 1000.0)::float8"""
        total = q1(conn, "SELECT count(*) FROM event_journal WHERE topic = %s", (LAT_TOPIC,))[0]
        if total != summary["sent"]:
            raise BenchError(f"latency: {total} rows in the journal for {summary['sent']} sent")
        row = q1(conn, f"""
            SELECT count(*),
                   percentile_cont(ARRAY[0.5, 0.9, 0.99, 0.999]) WITHIN GROUP (ORDER BY l),
                   max(l), avg(l), min(l), count(DISTINCT x)
              FROM (SELECT {lat_sql} AS l, xmin::text AS x FROM event_journal
                     WHERE topic = %s AND (payload->>'bench_ts_us')::bigint >= %s) s""",
                 (LAT_TOPIC, cut))
        cnt, pct, mx, avg, mn, txns = row
        if not cnt:
            raise BenchError("latency: no event was produced after the warm-up")
        per_s = qall(conn, f"""
            SELECT ((payload->>'bench_ts_us')::bigint - %s) / 1000000 AS s, count(*),
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY {lat_sql}), max({lat_sql})
              FROM event_journal WHERE topic = %s GROUP BY 1 ORDER BY 1""",
                     (int(summary["start_wall"] * 1e6), LAT_TOPIC))
        self.latency_ends = ends
        av1 = q1(conn, av_sql)
        autovacuum = {"running_at_start": av_running, "vacuums_during": int(av1[0] - av0[0]),
                      "analyzes_during": int(av1[1] - av0[1])}
        flush = self.flush_breakdown(conn, m0, m1, LAT_TOPIC,
                                     "AND (payload->>'bench_ts_us')::bigint >= %s", (cut,))
        self.results["figures"]["latency"] = {
            "flush": flush, "autovacuum": autovacuum,
            "events": cnt, "target_rate": rate, "achieved_rate": summary["rate"],
            "seconds": secs, "warmup_seconds": warm,
            "p50_ms": round(pct[0], 2), "p90_ms": round(pct[1], 2), "p99_ms": round(pct[2], 2),
            "p999_ms": round(pct[3], 2), "max_ms": round(float(mx), 2),
            "avg_ms": round(float(avg), 2), "min_ms": round(float(mn), 2),
            "transactions": txns, "avg_rows_per_transaction": round(cnt / txns, 1),
            "batch_max_wait_ms": self.o["max_wait_ms"],
            "per_second": [{"s": int(a), "events": b, "p50_ms": round(c, 1),
                            "max_ms": round(d, 1), "warmup": a < warm}
                           for a, b, c, d in per_s],
            "method": "pg_xact_commit_timestamp(xmin) of each row minus the producer's wall "
                      "clock at produce() (payload bench_ts_us), over the events produced "
                      "after the warm-up; producer linger.ms=1, acks=all",
        }
        log(f"  latency at {summary['rate']:,.0f}/s: p50 {pct[0]:.1f} ms, p99 {pct[2]:.1f} ms, "
            f"max {float(mx):.1f} ms ({cnt / txns:.0f} rows/transaction)")

    def replay_phase(self, conn):
        want = self.o["replay_events"]
        first = q1(conn, "SELECT min(received_at) FROM event_journal WHERE topic = %s "
                         "AND replay_count = 0", (TOPIC,))[0]
        nth = q1(conn, "SELECT received_at FROM event_journal WHERE topic = %s AND "
                       "replay_count = 0 ORDER BY received_at, id OFFSET %s LIMIT 1",
                 (TOPIC, want - 1))
        if nth is None:
            nth = q1(conn, "SELECT max(received_at) FROM event_journal WHERE topic = %s",
                     (TOPIC,))
        start = first.isoformat()
        end = (nth[0] + dt.timedelta(microseconds=1)).isoformat()
        body = json.dumps({"start": start, "end": end, "topic": TOPIC, "only_original": True,
                           "rate_per_s": 1000000, "confirm": True,
                           "reason": "benchmark range replay"}).encode()
        svc = self.services[0]
        url = f"http://127.0.0.1:{svc.http_port}/replay/range"
        log(f"range replay: POST {url} ({start} .. {end})")
        t_req = time.time()
        req = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                code, answer = r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise BenchError(f"POST /replay/range: {e.code} {e.read()[:500]!r}")
        t_ans = time.time()
        if code != 202:
            raise BenchError(f"POST /replay/range answered {code}: {answer}")
        job, matched = answer["job_id"], answer["matched"]
        log(f"  job {job}: {matched:,} events matched (answered in {t_ans - t_req:.2f} s)")
        state = {"rows": 0, "target": matched}

        def progress():
            state["rows"] = q1(conn, "SELECT count(*) FROM event_journal WHERE replay_job_id = %s",
                               (job,))[0]
            j = q1(conn, "SELECT status, total, succeeded, failed FROM replay_jobs WHERE id = %s",
                   (job,))
            state["job"] = j
            state["target"] = j[1] - j[3] if j[0] in ("done", "failed", "cancelled") else j[1]
            return (state["rows"], j[2])

        def cond():
            progress()
            return state["job"][0] in ("done", "failed", "cancelled") and \
                state["rows"] >= state["target"]

        timeout = self.o["timeout_base"] + matched / 2000
        self.wait(f"range replay job {job} ({matched:,} events) persisted", cond,
                  timeout=timeout, stall=self.o["stall"], progress=progress, poll=0.2)
        status, total, succeeded, failed = state["job"]
        last, rows = q1(conn, "SELECT max(pg_xact_commit_timestamp(xmin)), count(*) FROM "
                              "event_journal WHERE replay_job_id = %s", (job,))
        jt = q1(conn, "SELECT started_at, finished_at FROM replay_jobs WHERE id = %s", (job,))
        secs = last.timestamp() - t_req
        produce_secs = (jt[1] - jt[0]).total_seconds() if jt[0] and jt[1] else None
        self.results["figures"]["replay"] = {
            "job_id": job, "matched": matched, "status": status, "total": total,
            "succeeded": succeeded, "failed": failed, "rows_persisted": rows,
            "seconds": round(secs, 3), "events_per_s": round(rows / secs, 1),
            "http_answer_s": round(t_ans - t_req, 3),
            "job_produce_s": round(produce_secs, 3) if produce_secs else None,
            "job_produce_events_per_s": round(succeeded / produce_secs, 1)
            if produce_secs else None,
            "method": "from the POST /replay/range request until the commit time of the last "
                      "journal row with replay_job_id = the job (all of them persisted)",
        }
        if status != "done" or failed:
            self.results["errors"].append(f"replay job {job}: status {status}, {failed} failed")
        log(f"  replay: {rows:,} events persisted in {secs:.1f} s = {rows / secs:,.0f}/s "
            f"(job produced them in {produce_secs or 0:.1f} s)")
        self.markers["replay"] = (t_req, last.timestamp())

    def exactly_once(self, conn, topics, groups):
        """Every record of every partition is in the journal or the DLQ exactly once."""
        report = {}
        ok = True
        for topic in topics:
            ends = self.kafka.watermarks(topic)
            for g in groups:
                self.wait_consumed(f"{topic} fully committed", g, topic, ends, timeout=120)
            rows = {r[0]: r[1:] for r in qall(conn, """
                SELECT kafka_partition, count(*), count(DISTINCT kafka_offset),
                       min(kafka_offset), max(kafka_offset),
                       count(*) FILTER (WHERE src = 'journal'), count(*) FILTER (WHERE src = 'dlq')
                  FROM (SELECT kafka_partition, kafka_offset, 'journal' AS src
                          FROM event_journal WHERE topic = %s
                        UNION ALL
                        SELECT kafka_partition, kafka_offset, 'dlq'
                          FROM dead_letter_queue WHERE topic = %s) u
                 GROUP BY 1""", (topic, topic))}
            records = journal = dlq = 0
            bad = []
            for p, (lo, hi) in ends.items():
                want = hi - lo
                records += want
                got = rows.get(p)
                if want == 0 and got is None:
                    continue
                cnt, distinct, mn, mx, j, d = got if got else (0, 0, None, None, 0, 0)
                journal += j
                dlq += d
                if not (cnt == distinct == want and mn == lo and mx == hi - 1):
                    bad.append(f"partition {p}: {cnt} rows, {distinct} distinct offsets "
                               f"{mn}..{mx}; Kafka has {want} records {lo}..{hi - 1}")
            report[topic] = {"records": records, "journal_rows": journal, "dlq_rows": dlq,
                             "ok": not bad, "problems": bad[:12]}
            ok = ok and not bad
        return ok, report

    def content_checks(self, conn):
        c = {}
        dlq = dict(qall(conn, "SELECT reason, count(*) FROM dead_letter_queue WHERE topic = %s "
                              "GROUP BY 1", (TOPIC,)))
        c["dlq_by_reason"] = dlq
        c["poison_produced"] = self.counts["poison"]
        c["poison_in_dlq_ok"] = dlq == {"invalid_json": self.counts["poison"]}
        # the bench's own markers are another producer's: journaled as replays, unverified,
        # linked only to a parent of the same tenant (most random parents are not)
        marked = q1(conn, "SELECT count(*), count(*) FILTER (WHERE replay_source IS NOT NULL"
                          " AND replay_verified = false AND (replayed_from_event_id IS NULL OR"
                          " EXISTS (SELECT 1 FROM event_journal p WHERE"
                          " p.id = j.replayed_from_event_id AND p.tenant_id = j.tenant_id)))"
                          " FROM event_journal j WHERE topic = %s AND replay_job_id IS NULL AND "
                          "replay_count > 0", (TOPIC,))
        c["replay_marked_produced"] = self.counts["replay_marked"]
        c["replay_marked_journaled"] = marked[0]
        c["replay_marked_ok"] = marked[0] == marked[1] == self.counts["replay_marked"]
        c["replay_marked_depths"] = dict(qall(
            conn, "SELECT replay_count, count(*) FROM event_journal WHERE topic = %s AND "
                  "replay_job_id IS NULL AND replay_count > 0 GROUP BY 1 ORDER BY 1", (TOPIC,)))
        tenants = q1(conn, "SELECT count(DISTINCT tenant_id), count(DISTINCT event_type) "
                           "FROM event_journal WHERE topic = %s", (TOPIC,))
        c["tenants"], c["event_types"] = tenants
        return c

    def level_run(self, level):
        """BENCH_INFO_EVENTS events of bench.info into a fresh database, one instance."""
        ni = self.o["info_events"]
        db, group = f"eventsink_cmp_{level}", f"bench-cmp-{level}"
        adm = pg_connect(self.o["pg_port"], dbname="postgres")
        adm.execute(f"DROP DATABASE IF EXISTS {db}")
        adm.execute(f"CREATE DATABASE {db} OWNER eventsink")
        adm.close()
        log(f"log.level={level} run: {ni:,} events of {INFO_TOPIC} into database {db}")
        self.start_services(f"cmp-{level}", 1, dbname=db, group=group, topics=[INFO_TOPIC],
                            level=level, batch=self.o["batch"], max_wait_ms=self.o["max_wait_ms"])
        svc = self.services[0]
        c0 = proc_cpu_s(svc.pid) or 0.0
        self.wait_consumed(f"consuming {ni:,} events ({INFO_TOPIC}, log.level={level})",
                           group, INFO_TOPIC, self.info_ends,
                           timeout=self.o["timeout_base"] + ni / self.o["min_rate"])
        c1 = proc_cpu_s(svc.pid) or 0.0
        conn = pg_connect(self.o["pg_port"], dbname=db)
        try:
            rows, first, last, txns, first_rows = self.commit_span(conn, INFO_TOPIC)
        finally:
            conn.close()
        stop = self.stop_services()
        span = (last - first).total_seconds()
        rate = (rows - first_rows) / span if span > 0 else float("nan")
        with open(svc.logpath, errors="replace") as f:
            persisted = sum(1 for line in f if "Persisted " in line)
        if rows != ni:
            self.results["errors"].append(f"log.level={level} run: {rows} rows for {ni} events")
        log(f"  log.level={level}: {rate:,.0f} events/s over {rows:,} events "
            f"({persisted:,} 'Persisted' lines)")
        return {"events": rows, "events_per_s": round(rate, 1), "commit_span_s": round(span, 3),
                "service_cpu_s": round(c1 - c0, 2),
                "cpu_s_per_million_events": round((c1 - c0) / rows * 1e6, 2),
                "persisted_log_lines": persisted, "stop": stop}

    # -- the journal over years (issue 15): a filled journal against an empty one --
    FILL_CHUNK = 1000000

    def fill_journal(self, fconn, rows, days):
        """rows journal rows by SQL (not through Kafka), oldest first, spread over the last
        `days` days; 1 in 100 a replay of the row 1,000 before it (for lineage)."""
        t0 = time.time()
        # the month partitions first, as a backfill does (docs/OPERATOR_QUICKREF.md)
        fconn.execute("SELECT eventsink_journal_partitions(now() - make_interval(secs => %s),"
                      " now())", (days * 86400,))
        for a in range(1, rows + 1, self.FILL_CHUNK):
            b = min(rows, a + self.FILL_CHUNK - 1)
            fconn.execute("""
                INSERT INTO event_journal (tenant_id, event_type, topic, kafka_partition,
                    kafka_offset, event_key, headers, payload, received_at, kafka_timestamp,
                    replay_count, replay_source, replayed_from_event_id)
                SELECT t, e, 'bench.history', g %% 12, g / 12, 'lead-' || (g %% 200000),
                       '{"source": "apexflow-crm"}',
                       jsonb_build_object('tenant_id', t, 'event_type', e,
                           'event_id', md5(g::text), 'lead', jsonb_build_object(
                               'id', 'L-' || (g %% 200000), 'name', 'Lead ' || g,
                               'email', 'lead' || g || '@northwind.example',
                               'score', g %% 100, 'source', 'webinar'),
                           'owner', jsonb_build_object('id', 'U-' || (g %% 400), 'team', 'emea')),
                       ts, ts, r, CASE WHEN r > 0 THEN 'operator_api' END,
                       CASE WHEN r > 0 THEN g - 1000 END
                  FROM (SELECT g, (%s::text[])[1 + g %% %s] AS t,
                               (%s::text[])[1 + g %% %s] AS e,
                               now() - make_interval(secs => %s * (1 - g::float8 / %s)) AS ts,
                               CASE WHEN g %% 100 = 0 AND g > 1000 THEN 1 ELSE 0 END AS r
                          FROM generate_series(%s, %s) g) x""",
                          (TENANTS, len(TENANTS), TYPES, len(TYPES), days * 86400, rows, a, b))
            log(f"  filled {b:,} of {rows:,} rows ({time.time() - t0:.0f} s)")
        fconn.execute("VACUUM (ANALYZE) event_journal")
        size = q1(fconn, "SELECT sum(pg_total_relation_size(name::regclass))"
                         " FROM event_journal_partitions")[0]
        return time.time() - t0, size

    def api_latency(self, svc, fconn, rows, days, n):
        """p50/p99/max of n sequential requests of each lookup, in ms."""
        rng = random.Random(15)
        base = f"http://127.0.0.1:{svc.http_port}"
        replays = [r[0] for r in qall(fconn, "SELECT id FROM event_journal WHERE replay_count > 0"
                                             " AND id <= %s ORDER BY random() LIMIT %s",
                                      (rows, n))]
        day0 = q1(fconn, "SELECT date_trunc('day', min(received_at)) FROM event_journal")[0]

        def day_range():
            d = day0 + dt.timedelta(days=rng.randrange(1, days - 1))
            return json.dumps({"start": d.isoformat(), "end": (d + dt.timedelta(days=1)).isoformat(),
                               "dry_run": True}).encode()
        calls = {
            "events_latest_tenant": lambda: (f"/events/latest?tenant={rng.choice(TENANTS)}&limit=20",
                                             None),
            "event_by_id": lambda: (f"/events/{rng.randrange(1, rows)}", None),
            "lineage": lambda: (f"/events/{rng.choice(replays)}/lineage", None),
            "range_dry_run_one_day": lambda: ("/replay/range", day_range()),
        }
        out = {}
        for name, make in calls.items():
            times = []
            for _ in range(n):
                path, body = make()
                req = urllib.request.Request(base + path, data=body, method="POST" if body else "GET",
                                             headers={"Content-Type": "application/json"})
                t = time.perf_counter()
                with urllib.request.urlopen(req, timeout=60) as r:
                    r.read()
                times.append((time.perf_counter() - t) * 1000)
            times.sort()
            out[name] = {"requests": n, "p50_ms": round(times[n // 2], 2),
                         "p99_ms": round(times[min(n - 1, int(n * 0.99))], 2),
                         "max_ms": round(times[-1], 2)}
            log(f"  {name}: p50 {out[name]['p50_ms']} ms, p99 {out[name]['p99_ms']} ms")
        return out

    def journal_retention(self, conf, fconn, days):
        """`eventsink retention` with retention.journal at half the filled days: the
        months wholly older go, a DROP TABLE each; its time and what went."""
        keep = f"{max(1, days // 2)}d"
        rconf = conf.replace(".conf.lua", "-retention.conf.lua")
        write_config(rconf, kafka_port=self.o["kafka_port"], pg_port=self.o["pg_port"],
                     dbname="filled", group="bench-filled", topics=[FILL_TOPIC],
                     http_port=free_port(), metrics_port=free_port(), batch=self.o["batch"],
                     max_wait_ms=self.o["max_wait_ms"], level="warn", journal_retention=keep)
        before = q1(fconn, "SELECT pg_total_relation_size('event_journal')"
                           " + coalesce((SELECT sum(pg_total_relation_size(name::regclass))"
                           " FROM event_journal_partitions), 0)")[0]
        t0 = time.time()
        r = subprocess.run([self.o["bin"], "retention", "-c", rconf], capture_output=True,
                           text=True, timeout=1800)
        secs = time.time() - t0
        m = re.search(r"journal:\s+(\d+) partitions \((\d+) rows, (\d+) bytes\)", r.stdout)
        if r.returncode != 0 or not m:
            raise BenchError(f"eventsink retention (filled): {r.stdout}{r.stderr}")
        after = q1(fconn, "SELECT coalesce(sum(pg_total_relation_size(name::regclass)), 0)"
                          " FROM event_journal_partitions")[0]
        out = {"keep": keep, "partitions": int(m.group(1)), "rows": int(m.group(2)),
               "bytes": int(m.group(3)), "seconds": round(secs, 2),
               "journal_bytes_before": int(before), "journal_bytes_after": int(after)}
        log(f"  retention {keep}: {out['partitions']} partitions, {out['rows']:,} rows, "
            f"{out['bytes'] / 2**30:.2f} GiB dropped in {secs:.2f} s")
        return out

    def filled_phase(self, conn):
        rows, days, n = self.o["fill_rows"], self.o["fill_days"], self.o["events"]
        log(f"filled journal: {rows:,} rows over {days} days by SQL into database 'filled'")
        conn.execute("DROP DATABASE IF EXISTS filled")
        conn.execute("CREATE DATABASE filled")
        conf = os.path.join(self.dir, "sink-filled-migrate.conf.lua")
        write_config(conf, kafka_port=self.o["kafka_port"], pg_port=self.o["pg_port"],
                     dbname="filled", group="bench-filled", topics=[FILL_TOPIC], http_port=free_port(),
                     metrics_port=free_port(), batch=self.o["batch"], max_wait_ms=self.o["max_wait_ms"],
                     level="warn")
        mig = subprocess.run([self.o["bin"], "migrate", "-c", conf], capture_output=True,
                             text=True, timeout=120)
        if mig.returncode != 0:
            raise BenchError(f"eventsink migrate (filled): {mig.stdout}{mig.stderr}")
        fconn = pg_connect(self.o["pg_port"], dbname="filled")
        try:
            fill_s, size = self.fill_journal(fconn, rows, days)
            log(f"  {rows:,} rows in {fill_s:.0f} s; event_journal {size / 2**30:.1f} GiB")
            self.kafka.create_topics([FILL_TOPIC])
            log(f"producing {n:,} events to {FILL_TOPIC}")
            produce_bulk(self.kafka.bootstrap, FILL_TOPIC, n, seed=3)
            ends = self.kafka.watermarks(FILL_TOPIC)
            fconn.execute("CHECKPOINT")
            self.start_services("filled", self.o["instances"], dbname="filled", group="bench-filled",
                                level="warn", topics=[FILL_TOPIC], batch=self.o["batch"],
                                max_wait_ms=self.o["max_wait_ms"])
            self.wait_consumed(f"consuming {n:,} events into the filled journal", "bench-filled",
                               FILL_TOPIC, ends, self.o["timeout_base"] + n / self.o["min_rate"])
            got, first, last, txns, first_rows = self.commit_span(fconn, FILL_TOPIC)
            if got != n:
                raise BenchError(f"filled: {got} rows of {FILL_TOPIC} for {n} produced")
            span = (last - first).total_seconds()
            rate = (got - first_rows) / span if span > 0 else float("nan")
            empty = self.results["figures"]["throughput"]["events_per_s"]
            log(f"  ingest into the filled journal: {rate:,.0f} events/s against {empty:,.0f} "
                f"into the empty one ({rate / empty:.2f} x)")
            api = self.api_latency(self.services[0], fconn, rows, days, self.o["fill_requests"])
            self.stop_services()
            dropped = self.journal_retention(conf, fconn, days)
            self.results["figures"]["filled"] = {
                "rows": rows, "days": days, "fill_seconds": round(fill_s, 1),
                "journal_bytes": size, "events": n, "events_per_s": round(rate, 1),
                "empty_events_per_s": empty, "ratio_filled_to_empty": round(rate / empty, 3),
                "api": api, "retention": dropped,
                "method": "ingest as in the throughput run (first to last row commit time) into "
                          "a journal filled by SQL beforehand; API calls sequential, one at a "
                          "time, on the idle service, random ids, tenants and days",
            }
        finally:
            fconn.close()
            conn.execute("DROP DATABASE IF EXISTS filled WITH (FORCE)")

    def info_phase(self):
        warn = self.level_run("warn")
        info = self.level_run("info")
        self.results["figures"]["log_level"] = {
            "warn": warn, "info": info,
            "info_vs_warn": round(info["events_per_s"] / warn["events_per_s"], 3),
            "method": "the same BENCH_INFO_EVENTS events (topic bench.info) into two fresh "
                      "databases, one run at log.level warn and one at info (the default: one "
                      "'Persisted ...' line per event, to a file)",
        }

    def policy_phase(self):
        n = self.o["policy_iters"]
        tool = os.path.join(ROOT, "build", "bench", "policy_bench")
        empty = os.path.join(self.dir, "empty-policy.lua")
        with open(empty, "w") as f:
            f.write("-- no hooks: the built-in defaults of lua/runtime.lua\nreturn {}\n")
        out = {}
        for label, files in (("default.lua", [os.path.join(ROOT, "policies", "default.lua")]),
                             ("builtin_defaults", [empty])):
            log(f"policy cost: {tool} -n {n} ({label})")
            r = subprocess.run([tool, "-n", str(n), "-l", label, *files], capture_output=True,
                               text=True, timeout=600)
            if r.returncode != 0:
                raise BenchError(f"policy_bench failed: {r.stderr.strip()}")
            out[label] = json.loads(r.stdout)
        d = out["default.lua"]["kinds"]
        mix = self.counts
        tot = sum(mix.values())
        weighted = sum(d[k]["policy_decide_cpu_us"] * mix[m] for k, m in
                       (("original", "original"), ("replay", "replay_marked"),
                        ("poison", "poison"))) / tot
        self.results["figures"]["policy"] = {
            "us_per_event": round(d["original"]["policy_decide_cpu_us"], 3),
            "us_per_event_mix": round(weighted, 3),
            "us_per_event_wall": round(d["original"]["policy_decide_us"], 3),
            "record_check_us": round(d["original"]["record_check_cpu_us"], 3),
            "runs": out,
            "method": "build/bench/policy_bench: policy_decide() + decision_clear() of the "
                      "service's objects on a ~300-byte original event, N times in-process "
                      "(CPU time; wall in us_per_event_wall); mix = weighted like the stream",
        }
        log(f"  policy: {d['original']['policy_decide_cpu_us']:.2f} us/event (default.lua, "
            f"original), record_check {d['original']['record_check_cpu_us']:.2f} us")

    def rss_figures(self):
        rows = read_samples(self.sample_file)
        if not rows:
            return
        by_name = {}
        for t, name, rss, _cpu in rows:
            by_name.setdefault(name, []).append((t, rss))

        def in_window(w):
            if not w:
                return []
            a, b = w
            return [rss for lst in by_name.values() for t, rss in lst if a <= t <= b]

        peak = max(r for _, _, r, _ in rows)
        lat = in_window(self.markers.get("latency"))
        thr = in_window(self.markers.get("throughput"))
        self.results["figures"]["rss"] = {
            "peak_mib": round(peak / 1024, 1),
            "steady_mib": round(statistics.median(lat) / 1024, 1) if lat else None,
            "throughput_median_mib": round(statistics.median(thr) / 1024, 1) if thr else None,
            "throughput_peak_mib": round(max(thr) / 1024, 1) if thr else None,
            "samples": len(rows),
            "per_instance_peak_mib": {n: round(max(r for _, r in v) / 1024, 1)
                                      for n, v in by_name.items()},
            "method": "VmRSS every 100 ms per instance; steady = median during the steady-rate "
                      "latency run; peak = max over the whole run (all phases)",
        }

    def perf_report(self):
        pdata = os.path.join(self.dir, "perf", "throughput.data")
        if not os.path.exists(pdata):
            return
        svc = ",".join(str(p) for p in self.perf_pids)
        backends = ",".join(str(p) for p in getattr(self, "perf_backends", []))
        reports = [("by-process", ["--sort", "comm,dso", "--percent-limit", "0.5"]),
                   ("service-dso", ["--pid", svc, "--percentage", "relative", "--sort", "dso"]),
                   ("service-symbols", ["--pid", svc, "--percentage", "relative",
                                        "--sort", "dso,sym", "--percent-limit", "0.3"])]
        if backends:
            reports.append(("postgres-backend-symbols", [
                "--pid", backends, "--percentage", "relative", "--sort", "dso,sym",
                "--percent-limit", "0.3"]))
        outs = {}
        for name, extra in reports:
            path = os.path.join(self.dir, "perf", f"throughput-{name}.txt")
            with open(path, "w") as f:
                try:
                    subprocess.run(["perf", "report", "--stdio", "--no-children", "-g", "none",
                                    "-i", pdata, *extra],
                                   stdout=f, stderr=subprocess.DEVNULL, timeout=300)
                except subprocess.TimeoutExpired:
                    f.write("(perf report timed out)\n")
            outs[name] = os.path.relpath(path, ROOT)
        self.results["perf"] = outs
        log(f"perf reports: {', '.join(outs.values())}")

    def machine(self, conn):
        mem = 0
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = int(line.split()[1])
        model = ""
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        jars = glob.glob(os.path.join(ROOT, "tests", "kafka", "lib", "kafka_2.13-*.jar"))
        kver = os.path.basename(jars[0])[len("kafka_2.13-"):-4] if jars else "?"
        ver = subprocess.run([self.o["bin"], "--version"], capture_output=True, text=True)
        import confluent_kafka
        try:
            git = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                 capture_output=True, text=True, timeout=10).stdout.strip()
            dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "src", "lua",
                                    "sql", "policies"], capture_output=True, text=True,
                                   timeout=10).stdout.strip() != ""
        except Exception:
            git, dirty = "?", None
        with open("/proc/loadavg") as f:
            load = f.read().split()[:3]
        return {
            "hostname": socket.gethostname(), "nproc": os.cpu_count(), "cpu_model": model,
            "memory_mib": mem // 1024, "kernel": platform.release(),
            "os": platform.platform(),
            "postgresql": q1(conn, "SHOW server_version")[0],
            "kafka": kver,
            "librdkafka_service": ver.stdout.strip(),
            "librdkafka_bench_producer": confluent_kafka.libversion()[0],
            "eventsink_commit": git, "source_tree_dirty": dirty,
            "loadavg_at_start": load,
        }

    def run(self):
        o = self.o
        started = dt.datetime.now(dt.timezone.utc)
        conn = pg_connect(o["pg_port"])
        if q1(conn, "SHOW track_commit_timestamp")[0] != "on":
            raise BenchError("track_commit_timestamp is off in the benchmark's PostgreSQL")
        self.pg_postmaster = o.get("pg_pid")
        self.kafka_pid = o.get("kafka_pid")
        self.results["machine"] = self.machine(conn)
        self.results["config"] = {k: o[k] for k in (
            "events", "instances", "batch", "max_wait_ms", "lat_rate", "lat_seconds", "lat_warmup",
            "replay_events", "info_events", "policy_iters")}
        self.results["config"]["phases"] = sorted(o["phases"])
        self.results["config"]["partitions"] = PARTITIONS
        self.results["started_at"] = started.isoformat()
        ph = o["phases"]
        try:
            self.produce_phase()
            self.throughput_phase(conn)
            self.perf_pids = [s.pid for s in self.services]
            # the latency run before the COPY baseline: the aftermath of a bulk COPY (its
            # WAL and dirty pages, the dropped table) is the measuring device's, not the
            # service's (measured: p99 127 ms right after it, 42 ms without it)
            if "latency" in ph:
                self.latency_phase(conn)
            if "copy" in ph:
                self.copy_phase(conn)
            if "replay" in ph:
                self.replay_phase(conn)
            log("exactly-once check: every record in the journal or the DLQ, once")
            ok, rep = self.exactly_once(conn, [TOPIC, LAT_TOPIC], ["bench"])
            self.results["checks"]["exactly_once"] = {"ok": ok, "topics": rep}
            self.results["checks"]["content"] = self.content_checks(conn)
            if not ok:
                self.results["errors"].append("exactly-once check failed: see checks")
            log(f"  exactly once: {'ok' if ok else 'FAILED'} "
                f"({sum(t['records'] for t in rep.values()):,} records)")
            self.results["stop"] = self.stop_services()
            self.children.stop(self.sampler) if self.sampler else None
            self.sampler = None
            self.rss_figures()
            if o["info_events"] and "levels" in ph:
                self.info_phase()
            if "policy" in ph:
                self.policy_phase()
            if "filled" in ph:
                self.filled_phase(conn)
            self.perf_report()
        finally:
            conn.close()
            self.kafka.close()
        self.results["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat()
        with open("/proc/loadavg") as f:
            self.results["machine"]["loadavg_at_end"] = f.read().split()[:3]
        self.results["targets"] = self.targets()
        return self.results

    def targets(self):
        f = self.results["figures"]
        t = {}

        def put(name, value, limit, ok):
            t[name] = {"value": value, "target": limit, "met": bool(ok) if value is not None
                       else None}

        if "copy" in f:
            r = f["copy"]["throughput_ratio"]
            put("throughput_vs_copy", r, ">= 0.8", r >= 0.8)
        if "latency" in f:
            put("latency_p99_ms_at_5k", f["latency"]["p99_ms"], "<= 100",
                f["latency"]["p99_ms"] <= 100)
        if "rss" in f and f["rss"].get("steady_mib") is not None:
            put("steady_rss_mib", f["rss"]["steady_mib"], "<= 64", f["rss"]["steady_mib"] <= 64)
        if "policy" in f:
            put("policy_us_per_event", f["policy"]["us_per_event"], "<= 2",
                f["policy"]["us_per_event"] <= 2)
        if "replay" in f:
            put("range_replay_events_per_s", f["replay"]["events_per_s"], ">= 20000",
                f["replay"]["events_per_s"] >= 20000)
        if "filled" in f:
            r = f["filled"]["ratio_filled_to_empty"]
            put("filled_ingest_vs_empty", r, ">= 0.9", r >= 0.9)
            for name, a in f["filled"]["api"].items():
                put(f"filled_{name}_p99_ms", a["p99_ms"], "<= 50", a["p99_ms"] <= 50)
        return t


def print_table(res):
    f = res.get("figures", {})
    m = res.get("machine", {})
    lines = []
    add = lines.append
    add("")
    add("eventsink benchmark — " + res.get("started_at", "")[:19].replace("T", " ") + " UTC")
    add(f"machine: {m.get('nproc')} cores ({m.get('cpu_model', '')}), {m.get('memory_mib')} MiB, "
        f"kernel {m.get('kernel')}; PostgreSQL {m.get('postgresql')}, Kafka {m.get('kafka')}, "
        f"{m.get('librdkafka_service')}; load {' '.join(m.get('loadavg_at_start', []))} -> "
        f"{' '.join(m.get('loadavg_at_end', []))}")
    c = res.get("config", {})
    add(f"config: {c.get('events', 0):,} events, {c.get('partitions')} partitions, "
        f"{c.get('instances')} instance(s), batch.max_events {c.get('batch')}, "
        f"max_wait_ms {c.get('max_wait_ms')}")
    add("")
    rows = []

    def row(name, value, target="", extra=""):
        rows.append((name, value, target, extra))

    tg = res.get("targets", {})

    def mark(key):
        x = tg.get(key)
        if not x:
            return ""
        return f"{x['target']} {'ok' if x['met'] else 'MISSED'}"

    if "throughput" in f:
        t = f["throughput"]
        row("throughput (end to end)", f"{t['events_per_s']:,.0f} ev/s", "",
            f"{t['events']:,} rows in {t['commit_span_s']:.1f} s, "
            f"{t['avg_rows_per_transaction']:.0f} rows/txn")
        fl = t.get("flush") or {}
        if fl.get("avg_flush_ms") is not None:
            row("  per batch", f"{fl['avg_flush_ms']:.1f} ms", "",
                f"{fl['avg_rows']:.0f} rows; write+offset commit {fl['avg_flush_ms']:.1f} ms, "
                f"of which PostgreSQL transaction {fl['avg_pg_transaction_ms']:.1f} ms")
    if "copy" in f:
        row("PostgreSQL COPY, same rows", f"{f['copy']['rows_per_s']:,.0f} rows/s", "",
            f"{f['copy']['indexes']} indexes")
        row("  throughput / COPY", f"{f['copy']['throughput_ratio']:.2f}",
            mark("throughput_vs_copy"))
    if "log_level" in f:
        ll = f["log_level"]
        row("throughput, log.level=info", f"{ll['info']['events_per_s']:,.0f} ev/s", "",
            f"vs {ll['warn']['events_per_s']:,.0f} ev/s at warn on the same "
            f"{ll['info']['events']:,} events (x{ll['info_vs_warn']:.2f})")
    if "latency" in f:
        la = f["latency"]
        row(f"latency at {la['achieved_rate']:,.0f} ev/s p50", f"{la['p50_ms']:.1f} ms")
        row("  p99", f"{la['p99_ms']:.1f} ms", mark("latency_p99_ms_at_5k"))
        row("  max", f"{la['max_ms']:.1f} ms", "", f"{la['events']:,} events")
        fl = la.get("flush") or {}
        if fl.get("avg_flush_ms") is not None:
            row("  per batch", f"{fl['avg_flush_ms']:.1f} ms", "",
                f"{fl['avg_rows']:.0f} rows; write+offset commit {fl['avg_flush_ms']:.1f} ms, "
                f"of which PostgreSQL transaction {fl['avg_pg_transaction_ms']:.1f} ms")
    if "rss" in f:
        r = f["rss"]
        row("RSS peak", f"{r['peak_mib']:.1f} MiB")
        if r.get("steady_mib") is not None:
            row("RSS steady (5k/s)", f"{r['steady_mib']:.1f} MiB", mark("steady_rss_mib"),
                f"throughput run median {r.get('throughput_median_mib')} MiB")
    if "policy" in f:
        p = f["policy"]
        row("policy cost", f"{p['us_per_event']:.2f} us/event", mark("policy_us_per_event"),
            f"stream mix {p['us_per_event_mix']:.2f}, record_check {p['record_check_us']:.2f}")
        b = p["runs"]["builtin_defaults"]["kinds"]["original"]["policy_decide_cpu_us"]
        row("  built-in defaults only", f"{b:.2f} us/event")
    if "replay" in f:
        rp = f["replay"]
        row("range replay", f"{rp['events_per_s']:,.0f} ev/s", mark("range_replay_events_per_s"),
            f"{rp['rows_persisted']:,} events in {rp['seconds']:.1f} s")
    if "filled" in f:
        fd = f["filled"]
        row(f"ingest, journal of {fd['rows']:,} rows", f"{fd['events_per_s']:,.0f} ev/s",
            mark("filled_ingest_vs_empty"),
            f"x{fd['ratio_filled_to_empty']:.2f} of the empty journal's; filled in "
            f"{fd['fill_seconds']:.0f} s, {fd['journal_bytes'] / 2**30:.1f} GiB over {fd['days']} days")
        for name, a in fd["api"].items():
            row(f"  {name} p99", f"{a['p99_ms']:.1f} ms", mark(f"filled_{name}_p99_ms"),
                f"p50 {a['p50_ms']:.1f} ms, max {a['max_ms']:.1f} ms, {a['requests']} requests")
        rt = fd.get("retention")
        if rt:
            row(f"  retention {rt['keep']}", f"{rt['seconds']:.2f} s", "",
                f"{rt['partitions']} partitions, {rt['rows']:,} rows, "
                f"{rt['bytes'] / 2**30:.2f} GiB dropped")
    if "cpu" in f:
        cp = f["cpu"]
        w = cp["window"]
        row("service CPU", f"{cp['cpu_s_per_million_events']:.1f} s / 1M ev", "",
            f"window: service {w.get('service')} s, postgres {w.get('postgres')} s, "
            f"kafka {w.get('kafka')} s, other {w.get('other_s')} s")
    ch = res.get("checks", {})
    if "exactly_once" in ch:
        eo = ch["exactly_once"]
        recs = sum(t["records"] for t in eo["topics"].values())
        cc = ch.get("content", {})
        row("exactly once (journal+DLQ)", "ok" if eo["ok"] else "FAILED", "",
            f"{recs:,} records; poison->DLQ {'ok' if cc.get('poison_in_dlq_ok') else 'BAD'}, "
            f"replay markers {'ok' if cc.get('replay_marked_ok') else 'BAD'}")
    w1 = max(len(r[0]) for r in rows) if rows else 10
    w2 = max(len(r[1]) for r in rows) if rows else 10
    w3 = max(len(r[2]) for r in rows) if rows else 0
    for name, value, target, extra in rows:
        add(f"  {name:<{w1}}  {value:>{w2}}  {target:<{w3}}  {extra}".rstrip())
    for e in res.get("errors", []):
        add(f"  ERROR: {e}")
    add("")
    print("\n".join(lines), flush=True)


def cmd_run(argv):
    import argparse
    ap = argparse.ArgumentParser(prog="bench.py run")
    ap.add_argument("--dir", required=True)
    ap.add_argument("--pg-port", type=int, required=True)
    ap.add_argument("--kafka-port", type=int, required=True)
    ap.add_argument("--pg-pid", type=int)
    ap.add_argument("--kafka-pid", type=int)
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "eventsink"))
    a = ap.parse_args(argv)
    events = env_int("BENCH_EVENTS", 1000000)
    if events < 1000:
        raise BenchError("BENCH_EVENTS must be at least 1000")
    opts = {
        "dir": os.path.abspath(a.dir), "pg_port": a.pg_port, "kafka_port": a.kafka_port,
        "pg_pid": a.pg_pid, "kafka_pid": a.kafka_pid, "bin": a.bin,
        "events": events,
        "instances": env_int("BENCH_INSTANCES", 1),
        "batch": env_int("BENCH_BATCH", 1000),
        "max_wait_ms": env_int("BENCH_MAX_WAIT_MS", 50),
        "lat_rate": env_int("BENCH_LATENCY_RATE", 5000),
        "lat_seconds": env_int("BENCH_LATENCY_SECONDS", 30),
        # a freshly started broker alone (no eventsink) delivers with 1-3 s of latency for
        # its first 10-20 s at 5,000/s (JVM warm-up, measured with a plain consumer): the
        # warm-up keeps that out of the service's figure
        "lat_warmup": env_int("BENCH_LATENCY_WARMUP", 30),
        "replay_events": min(env_int("BENCH_REPLAY_EVENTS", 100000), events - events // 100),
        "info_events": min(env_int("BENCH_INFO_EVENTS", 100000), events),
        "policy_iters": env_int("BENCH_POLICY_ITERATIONS", 1000000),
        "stall": env_int("BENCH_STALL_SECONDS", 90),
        "min_rate": env_int("BENCH_MIN_RATE", 300),
        "timeout_base": 120,
        "perf": os.environ.get("BENCH_PERF", "0") not in ("", "0"),
        "phases": set((os.environ.get("BENCH_PHASES") or ALL_PHASES).replace(" ", "").split(",")),
    }
    opts["fill_rows"] = env_int("BENCH_FILL_ROWS", 20000000)
    opts["fill_days"] = env_int("BENCH_FILL_DAYS", 180)
    opts["fill_requests"] = env_int("BENCH_FILL_REQUESTS", 300)
    unknown = opts["phases"] - set(ALL_PHASES.split(",")) - set(OPT_PHASES.split(","))
    if unknown:
        raise BenchError(f"BENCH_PHASES: unknown phase(s) {', '.join(sorted(unknown))}; "
                         f"known: {ALL_PHASES},{OPT_PHASES} (the throughput run always runs)")
    if "levels" not in opts["phases"]:
        opts["info_events"] = 0
    bench = Bench(opts)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    res = None
    try:
        res = bench.run()
    except BenchError as e:
        bench.results["errors"].append(str(e))
        log(f"FAILED: {e}")
        res = bench.results
    except Exception as e:  # a bug or an unexpected answer: still write what was measured
        import traceback
        traceback.print_exc()
        bench.results["errors"].append(f"{type(e).__name__}: {e}")
        log(f"FAILED: {type(e).__name__}: {e}")
        res = bench.results
    finally:
        bench.children.stop_all()
    res["result"] = "ok" if not res["errors"] else "failed"
    path = os.path.join(opts["dir"], f"results-{stamp}.json")
    with open(path, "w") as f:
        json.dump(res, f, indent=2, default=str)
    shutil.copyfile(path, os.path.join(opts["dir"], "latest.json"))
    print_table(res)
    log(f"results: {os.path.relpath(path, ROOT)} (and .bench/latest.json)")
    return 0 if res["result"] == "ok" else 1


def main():
    def on_term(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "sample":
        return cmd_sample(args)
    if cmd == "produce-paced":
        return cmd_produce_paced(args)
    if cmd == "run":
        try:
            return cmd_run(args)
        except BenchError as e:
            log(f"FAILED: {e}")
            return 1
        except KeyboardInterrupt:
            log("interrupted")
            return 130
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
