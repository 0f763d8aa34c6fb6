"""End-to-end test harness for eventsink.

Runs a private PostgreSQL server (scripts/pg.sh), a real single-node Kafka broker
(tests/kafka/broker.sh) and eventsink processes, all on 127.0.0.1, and offers helpers to
feed events in and look at what came out.

Every process started here is registered and cleaned up at interpreter exit (and on
SIGTERM/SIGHUP of the test runner), even when a test fails.
"""

from __future__ import annotations

import atexit
import gc
import itertools
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import psycopg
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

REPO = Path(__file__).resolve().parents[2]
TEST_ROOT = Path(os.environ.get("E2E_TEST_ROOT", str(REPO / ".test")))  # where pg/ and kafka/ live
PG_SH = REPO / "scripts" / "pg.sh"
BROKER_SH = REPO / "tests" / "kafka" / "broker.sh"
DEFAULT_POLICY = REPO / "policies" / "default.lua"
LOOPBACK = "127.0.0.1"

# Multiplies every waiting timeout: set E2E_TIMEOUT_SCALE=3 for sanitizer builds if the
# generous defaults are still not enough on a slow machine.
TIMEOUT_SCALE = float(os.environ.get("E2E_TIMEOUT_SCALE", "1"))


def scaled(seconds: float) -> float:
    return seconds * TIMEOUT_SCALE


def eventsink_bin() -> Path:
    return Path(os.path.abspath(os.environ.get("EVENTSINK_BIN", str(REPO / "build" / "eventsink"))))


# --------------------------------------------------------------------------------------
# process bookkeeping and cleanup
# --------------------------------------------------------------------------------------

_cleanups: list = []  # callables, run last-registered first
_cleanup_lock = threading.Lock()
_cleaned = False


def register_cleanup(fn) -> None:
    with _cleanup_lock:
        _cleanups.append(fn)


def unregister_cleanup(fn) -> None:
    with _cleanup_lock:
        try:
            _cleanups.remove(fn)
        except ValueError:
            pass


def cleanup_all() -> None:
    global _cleaned
    with _cleanup_lock:
        fns = list(reversed(_cleanups))
        _cleanups.clear()
        _cleaned = True
    for fn in fns:
        try:
            fn()
        except Exception:  # cleanup must go on
            pass


atexit.register(cleanup_all)


def _on_signal(signum, frame):  # pragma: no cover - only when the runner is killed
    cleanup_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


for _sig in (signal.SIGTERM, signal.SIGHUP):
    try:
        if signal.getsignal(_sig) in (signal.SIG_DFL, None):
            signal.signal(_sig, _on_signal)
    except (ValueError, OSError):  # not the main thread
        pass


def _kill_pid(pid: int, sig=signal.SIGKILL) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie counts as dead
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


# --------------------------------------------------------------------------------------
# ports
# --------------------------------------------------------------------------------------

_handed_out: set[int] = set()


def free_port(consecutive: int = 1) -> int:
    """A free TCP port on 127.0.0.1 (and the `consecutive - 1` ports after it)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((LOOPBACK, 0))
            port = s.getsockname()[1]
        ports = range(port, port + consecutive)
        if any(p in _handed_out or p > 65535 for p in ports):
            continue
        ok = True
        for p in ports[1:]:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind((LOOPBACK, p))
                except OSError:
                    ok = False
                    break
        if ok:
            _handed_out.update(ports)
            return port
    raise RuntimeError("no free port found")


def port_open(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def wait_for(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):
    """Polls predicate() until it returns a truthy value, which is returned."""
    deadline = time.monotonic() + scaled(timeout)
    last_exc = None
    while True:
        try:
            v = predicate()
            if v:
                return v
        except AssertionError:
            raise
        except Exception as e:  # noqa: BLE001 - reported on timeout
            last_exc = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {scaled(timeout):.0f}s waiting for {what}"
                                 + (f" (last error: {last_exc!r})" if last_exc else ""))
        time.sleep(interval)


# --------------------------------------------------------------------------------------
# one test session at a time on this work tree
# --------------------------------------------------------------------------------------

_lock_file = None


def session_lock(timeout: float = 1800) -> None:
    """Takes .test/e2e.lock for the rest of the process, so that a second test session on
    the same work tree waits instead of removing the first one's servers."""
    global _lock_file
    if _lock_file is not None:
        return
    import fcntl
    TEST_ROOT.mkdir(parents=True, exist_ok=True)
    f = open(TEST_ROOT / "e2e.lock", "w")
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise RuntimeError(f"another e2e test session holds {TEST_ROOT / 'e2e.lock'}")
            time.sleep(1)
    f.write(str(os.getpid()))
    f.flush()
    _lock_file = f


# --------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------

def mount_small_disk(folder: Path, mb: int) -> None:
    """A tmpfs of mb MiB mounted at folder (root only: the CI machine runs as root), for a
    server whose disk a test fills up."""
    if os.geteuid() != 0:
        raise RuntimeError("mounting a small disk needs root (the CI machine runs as root)")
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mb}m,mode=0755", "tmpfs", str(folder)],
                   check=True)
    register_cleanup(lambda: unmount_small_disk(folder))


def unmount_small_disk(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill_disk(folder: Path) -> Path:
    """Writes a file into folder until its disk is full; returns the file."""
    filler = folder / "filler"
    with open(filler, "wb") as f:
        block = b"\0" * (1 << 20)
        try:
            while True:
                f.write(block)
                f.flush()
        except OSError:
            pass
    return filler


def pg_answers(server: "PgServer") -> bool:
    """Whether the server answers a query now (not down, starting or out of disk)."""
    try:
        with server.connect(connect_timeout=3) as c:
            c.execute("SELECT 1")
        return True
    except Exception:  # noqa: BLE001
        return False


class PgServer:
    """A private PostgreSQL server run through scripts/pg.sh."""

    def __init__(self, directory: Path, port: int | None = None,
                 also_listen: Sequence[str] = ()):
        self.dir = Path(directory)
        self.port = port or free_port()
        self.also_listen = list(also_listen)  # addresses beside 127.0.0.1
        self.running = False
        self._db_counter = itertools.count(1)
        self._tag = uuid.uuid4().hex[:6]

    # lifecycle
    def start(self) -> None:
        env = dict(os.environ, PG_LISTEN=",".join([LOOPBACK, *self.also_listen]))
        r = subprocess.run(["bash", str(PG_SH), "start", str(self.dir), str(self.port)],
                           capture_output=True, text=True, timeout=180, env=env)
        if r.returncode != 0:
            raise RuntimeError(f"pg.sh start failed ({r.returncode}):\n{r.stdout}\n{r.stderr}\n"
                               + self.server_log_tail())
        self.running = True
        register_cleanup(self._cleanup)

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(["bash", str(PG_SH), "stop", str(self.dir), mode],
                       capture_output=True, text=True, timeout=120)
        self.running = False
        unregister_cleanup(self._cleanup)

    def _cleanup(self) -> None:
        self.thaw()
        subprocess.run(["bash", str(PG_SH), "stop", str(self.dir), "immediate"],
                       capture_output=True, timeout=120)

    def trust(self, network: str) -> None:
        """Lets clients from `network` (CIDR) in, as 127.0.0.1 is, for them and replication."""
        hba = self.dir / "data" / "pg_hba.conf"
        with open(hba, "a") as f:
            f.write(f"host all all {network} trust\nhost replication all {network} trust\n")
        with self.connect("postgres") as c:
            c.execute("SELECT pg_reload_conf()")

    def freeze(self) -> None:
        """Stops every process of the server (SIGSTOP), as in a VM pause: connections stay
        open, nothing answers, a new connection is accepted by the kernel and then waits."""
        postmaster = int((self.dir / "data" / "postmaster.pid").read_text().split()[0])
        children = [int(p) for p in subprocess.run(["pgrep", "-P", str(postmaster)],
                                                   capture_output=True, text=True).stdout.split()]
        self._frozen = [postmaster] + children
        for p in self._frozen:
            _kill_pid(p, signal.SIGSTOP)

    def thaw(self) -> None:
        for p in getattr(self, "_frozen", []):
            _kill_pid(p, signal.SIGCONT)
        self._frozen = []

    def server_log_tail(self, n: int = 30) -> str:
        p = self.dir / "server.log"
        if not p.exists():
            return ""
        return "\n".join(p.read_text(errors="replace").splitlines()[-n:])

    # connections
    def dsn(self, dbname: str = "eventsink", host: str = LOOPBACK) -> str:
        return f"host={host} port={self.port} user=eventsink dbname={dbname}"

    def connect(self, dbname: str = "eventsink", **kw) -> psycopg.Connection:
        return psycopg.connect(self.dsn(dbname), autocommit=True, connect_timeout=10, **kw)

    def new_database(self, hint: str = "t") -> str:
        """Creates an empty database with a unique name and returns its DSN."""
        hint = re.sub(r"[^a-z0-9_]", "_", hint.lower())[:30]
        name = f"es_{hint}_{self._tag}_{next(self._db_counter)}"
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    @staticmethod
    def clean_stale(directory: Path) -> None:
        """Stops a server left over from an earlier run and removes its folder."""
        directory = Path(directory)
        if (directory / "data" / "postmaster.pid").exists():
            subprocess.run(["bash", str(PG_SH), "stop", str(directory), "immediate"],
                           capture_output=True, timeout=120)
        shutil.rmtree(directory, ignore_errors=True)


def connect(dsn: str) -> psycopg.Connection:
    return psycopg.connect(dsn, autocommit=True, connect_timeout=5)


def query(dsn: str, sql: str, params: Sequence | None = None) -> list[tuple]:
    with connect(dsn) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def query_dicts(dsn: str, sql: str, params: Sequence | None = None) -> list[dict]:
    from psycopg.rows import dict_row
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5, row_factory=dict_row) as conn:
        return conn.execute(sql, params).fetchall()


def scalar(dsn: str, sql: str, params: Sequence | None = None):
    rows = query(dsn, sql, params)
    return rows[0][0] if rows else None


def count_or_zero(dsn: str, sql: str) -> int:
    """Runs a count query; a table that does not exist yet counts as 0."""
    try:
        return int(scalar(dsn, sql) or 0)
    except psycopg.errors.UndefinedTable:
        return 0


def _check_alive(sinks) -> None:
    for s in sinks or ():
        if not s.alive():
            rc = s.proc.poll() if s.proc else None
            raise AssertionError(f"{s.name} exited (code {rc}) while the test waited for it:\n"
                                 f"{tail(s.log_text())}")


def wait_rows(dsn: str, sql: str, expected: int, timeout: float = 120,
              interval: float = 0.25, sinks: Sequence["SinkProcess"] = ()) -> int:
    """Polls a count query until it returns `expected`; tolerates a database that is down
    and tables that do not exist yet. Fails at once if the count overshoots, or if one of
    `sinks` exits meanwhile."""
    deadline = time.monotonic() + scaled(timeout)
    last: Any = None
    while True:
        _check_alive(sinks)
        try:
            last = count_or_zero(dsn, sql)
            if last == expected:
                return last
            if last > expected:
                raise AssertionError(f"{sql!r} returned {last}, more than the {expected} expected")
        except psycopg.OperationalError as e:
            last = f"database unreachable: {e}".strip()
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {scaled(timeout):.0f}s: {sql!r} is {last}, "
                                 f"expected {expected}")
        time.sleep(interval)


def wait_at_least(dsn: str, sql: str, minimum: int, timeout: float = 120,
                  sinks: Sequence["SinkProcess"] = ()) -> int:
    def check():
        _check_alive(sinks)
        n = count_or_zero(dsn, sql)
        return n if n >= minimum else 0
    deadline = time.monotonic() + scaled(timeout)
    while True:
        try:
            n = check()
            if n:
                return n
        except psycopg.OperationalError:
            pass
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {scaled(timeout):.0f}s waiting for "
                                 f"{sql!r} >= {minimum}")
        time.sleep(0.25)


# --------------------------------------------------------------------------------------
# Kafka
# --------------------------------------------------------------------------------------

class KafkaBroker:
    """A real single-node Kafka broker run through tests/kafka/broker.sh."""

    def __init__(self, directory: Path, port: int | None = None, host: str = LOOPBACK):
        self.dir = Path(directory)
        self.port = port or free_port(consecutive=2)  # the controller listens on port + 1
        self.host = host  # the clients' listener's address (the controller's is loopback)
        self.bootstrap = f"{host}:{self.port}"
        self.replication = 1  # new topics' replication factor
        self.node_env: dict[str, str] = {}  # BROKER_NODE_ID... for a node of a cluster
        self._admin: AdminClient | None = None
        self._topic_counter = itertools.count(1)
        self._tag = uuid.uuid4().hex[:6]

    def start(self) -> None:
        register_cleanup(self._cleanup)
        r = subprocess.run(["bash", str(BROKER_SH), "start", str(self.dir), str(self.port)],
                           capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, BROKER_HOST=self.host, **self.node_env))
        if r.returncode != 0:
            raise RuntimeError(f"broker.sh start failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        # the port listens before the broker answers metadata requests: wait for that
        wait_for(lambda: self.admin().list_topics(timeout=5).brokers, 120,
                 what="the Kafka broker to answer metadata requests")

    def stop(self) -> None:
        # clients first, so that they do not go on trying to reach a stopped broker
        self._admin = None
        gc.collect()
        subprocess.run(["bash", str(BROKER_SH), "stop", str(self.dir)],
                       capture_output=True, timeout=120)
        unregister_cleanup(self._cleanup)

    def _cleanup(self) -> None:
        self.thaw()
        self.stop()

    def freeze(self) -> None:
        """Stops the broker's process (SIGSTOP): connections stay open, requests get no
        answer, as with a GC or VM pause."""
        _kill_pid(int((self.dir / "pid").read_text().strip()), signal.SIGSTOP)

    def thaw(self) -> None:
        pidfile = self.dir / "pid"
        if pidfile.exists():
            _kill_pid(int(pidfile.read_text().strip()), signal.SIGCONT)

    @staticmethod
    def clean_stale(directory: Path) -> None:
        directory = Path(directory)
        pidfile = directory / "pid"
        if pidfile.exists():
            try:
                pid = int(pidfile.read_text().strip())
            except ValueError:
                pid = 0
            if pid > 0 and _pid_alive(pid):
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    cmdline = b""
                if b"kafka" in cmdline:  # make sure the pid was not reused
                    _kill_pid(pid, signal.SIGKILL)
        shutil.rmtree(directory, ignore_errors=True)

    def admin(self) -> AdminClient:
        if self._admin is None:
            self._admin = AdminClient({"bootstrap.servers": self.bootstrap})
        return self._admin

    def unique_topic(self, prefix: str = "apexflow.leads") -> str:
        return f"{prefix}.{self._tag}{next(self._topic_counter)}"

    def create_topic(self, name: str | None = None, partitions: int = 4) -> str:
        name = name or self.unique_topic()
        futures = self.admin().create_topics([NewTopic(name, num_partitions=partitions,
                                                       replication_factor=self.replication)])
        futures[name].result(timeout=scaled(60))

        def ready():
            md = self.admin().list_topics(topic=name, timeout=5)
            t = md.topics.get(name)
            return (t is not None and t.error is None and len(t.partitions) == partitions
                    and all(p.leader >= 0 for p in t.partitions.values()))
        wait_for(ready, 60, what=f"topic {name} to have {partitions} partitions with leaders")
        return name

    def producer(self, **conf) -> Producer:
        base = {"bootstrap.servers": self.bootstrap, "acks": "all", "linger.ms": 5,
                "enable.idempotence": True}
        base.update(conf)
        return Producer(base)

    def produce(self, topic: str, records: Iterable, producer: Producer | None = None
                ) -> list[tuple[int, int]]:
        """Produces records and waits for every delivery. A record is (key, value, headers,
        partition) with key a str/bytes/None, value bytes (a str or a dict/list is encoded),
        headers a list of (name, value) or None, partition an int or None (the partitioner
        chooses). Returns the (partition, offset) of each record, in order."""
        own = producer is None
        p = producer or self.producer()
        results: list = []
        errors: list = []

        def cb_for(i):
            def cb(err, msg):
                if err is not None:
                    errors.append((i, err))
                else:
                    results[i] = (msg.partition(), msg.offset())
            return cb

        for i, rec in enumerate(records):
            key, value, headers, partition = (tuple(rec) + (None, None, None, None))[:4]
            if isinstance(value, (dict, list)):
                value = json.dumps(value).encode()
            elif isinstance(value, str):
                value = value.encode()
            results.append(None)
            kw = {"key": key, "value": value, "on_delivery": cb_for(i)}
            if headers:
                kw["headers"] = list(headers)
            if partition is not None:
                kw["partition"] = partition
            while True:
                try:
                    p.produce(topic, **kw)
                    break
                except BufferError:
                    p.poll(0.5)
            p.poll(0)
        remaining = p.flush(scaled(120))
        if own:
            del p
        if remaining:
            raise AssertionError(f"{remaining} records were not delivered to {topic}")
        if errors:
            raise AssertionError(f"delivery failed for {len(errors)} records, first: {errors[0]}")
        assert all(r is not None for r in results)
        return results

    def consume(self, topic: str, n: int, timeout: float = 60) -> list:
        """Reads the first n records of a topic (a fresh consumer group)."""
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"harness-{uuid.uuid4().hex}",
                      "auto.offset.reset": "earliest", "enable.auto.commit": False})
        out = []
        try:
            c.subscribe([topic])
            deadline = time.monotonic() + scaled(timeout)
            while len(out) < n and time.monotonic() < deadline:
                m = c.poll(0.5)
                if m is None:
                    continue
                if m.error():
                    continue
                out.append(m)
        finally:
            c.close()
        return out

    def commit_offsets(self, group_id: str, topic: str, offsets: dict[int, int]) -> None:
        """Sets the group's committed offsets (the group must have no member: an operator's
        reset). Raises KafkaException when the broker refuses."""
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group_id,
                      "enable.auto.commit": False})
        try:
            c.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()],
                     asynchronous=False)
        finally:
            c.close()

    def committed_offsets(self, group_id: str, topic: str, partitions: int) -> dict[int, int]:
        """The group's committed offset per partition (-1001 when none)."""
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group_id,
                      "enable.auto.commit": False})
        try:
            tps = c.committed([TopicPartition(topic, p) for p in range(partitions)],
                              timeout=scaled(30))
            return {tp.partition: tp.offset for tp in tps}
        finally:
            c.close()


# --------------------------------------------------------------------------------------
# events
# --------------------------------------------------------------------------------------

TENANTS = ["acme", "globex", "initech", "umbrella", "hooli"]
EVENT_TYPES = ["lead.created", "lead.updated", "lead.qualified", "deal.won", "deal.lost",
               "contact.merged"]
_FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Margaret", "Ken"]
_LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Hamilton", "Thompson"]
_SOURCES = ["web_form", "import", "api", "referral", "event_badge_scan"]


def make_event(i: int, rng: random.Random | None = None, tenant: str | None = None,
               event_type: str | None = None) -> dict:
    """One realistic ApexFlow CRM event (about 300 bytes as JSON)."""
    rng = rng or random.Random(i)
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    tenant = tenant or rng.choice(TENANTS)
    etype = event_type or rng.choice(EVENT_TYPES)
    ts = 1_767_225_600 + i * 7 + rng.randrange(5)  # 2026-01-01 onwards
    return {
        "event_id": f"evt_{uuid.UUID(int=rng.getrandbits(128)).hex[:20]}",
        "tenant_id": tenant,
        "event_type": etype,
        "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)),
        "seq": i,
        "data": {
            "lead_id": f"lead_{rng.randrange(10**8):08d}",
            "owner_id": rng.randrange(1, 500),
            "contact": {"name": f"{first} {last}",
                        "email": f"{first.lower()}.{last.lower()}@{tenant}.example"},
            "source": rng.choice(_SOURCES),
            "score": rng.randrange(0, 100),
            "amount": round(rng.uniform(100, 50000), 2),
            "tags": rng.sample(["enterprise", "smb", "emea", "amer", "apac", "hot", "renewal"], 2),
        },
    }


def event_stream(n: int, seed: int = 1, start: int = 0) -> Iterator[dict]:
    rng = random.Random(seed)
    for i in range(start, start + n):
        yield make_event(i, rng)


def event_records(events: Iterable[dict], headers: bool = True) -> list[tuple]:
    """Kafka records for events: key = the lead id, JSON value, a few headers."""
    out = []
    for ev in events:
        hdrs = None
        if headers:
            hdrs = [("source", b"apexflow-crm"), ("trace-id", ev["event_id"].encode()),
                    ("content-type", b"application/json")]
        out.append((ev["data"]["lead_id"], json.dumps(ev).encode(), hdrs, None))
    return out


# --------------------------------------------------------------------------------------
# Lua configuration
# --------------------------------------------------------------------------------------

_LUA_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LUA_KEYWORDS = {"and", "break", "do", "else", "elseif", "end", "false", "for", "function",
                 "goto", "if", "in", "local", "nil", "not", "or", "repeat", "return", "then",
                 "true", "until", "while"}


def lua_str(s: str) -> str:
    out = ['"']
    for ch in s.encode():
        c = chr(ch)
        if c == '"':
            out.append('\\"')
        elif c == "\\":
            out.append("\\\\")
        elif 32 <= ch < 127:
            out.append(c)
        else:
            out.append(f"\\{ch:03d}")
    out.append('"')
    return "".join(out)


def to_lua(v: Any, indent: int = 0) -> str:
    pad = "  " * (indent + 1)
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return lua_str(v)
    if isinstance(v, (list, tuple)):
        if not v:
            return "{}"
        return "{\n" + "".join(f"{pad}{to_lua(x, indent + 1)},\n" for x in v) + "  " * indent + "}"
    if isinstance(v, dict):
        if not v:
            return "{}"
        items = []
        for k, x in v.items():
            key = k if (_LUA_IDENT.match(k) and k not in _LUA_KEYWORDS) else f"[{lua_str(k)}]"
            items.append(f"{pad}{key} = {to_lua(x, indent + 1)},\n")
        return "{\n" + "".join(items) + "  " * indent + "}"
    raise TypeError(f"cannot write {type(v)} as Lua")


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


FAST_REBALANCE = {
    "session.timeout.ms": "6000",
    "heartbeat.interval.ms": "1000",
    "topic.metadata.refresh.interval.ms": "1000",
    # topics are created fresh by each test: read them from the start whatever the
    # service's default
    "auto.offset.reset": "earliest",
}


def build_config(*, brokers: str, group_id: str, topics: Sequence[str], dsn: str,
                 http_port: int, metrics_port: int, policies: Sequence[str] | None = None,
                 batch: dict | None = None, overrides: dict | None = None) -> dict:
    cfg: dict = {
        "kafka": {
            "brokers": brokers,
            "group_id": group_id,
            "topics": list(topics),
            "properties": dict(FAST_REBALANCE),
        },
        "postgres": {"dsn": dsn},
        "http": {"listen": f"{LOOPBACK}:{http_port}"},
        "metrics": {"listen": f"{LOOPBACK}:{metrics_port}"},
        "policies": [str(Path(p).resolve()) for p in (policies or [DEFAULT_POLICY])],
        "log": {"level": "info"},
    }
    if batch:
        cfg["batch"] = dict(batch)
    if overrides:
        cfg = deep_merge(cfg, overrides)
    return cfg


def render_config(cfg: dict, extra_config: str | None = None) -> str:
    """The sink.conf.lua text. extra_config is Lua run before the return, with the table
    in the local `c` (e.g. `c.kafka.max_message_bytes = 4096`)."""
    text = "-- written by tests/e2e/harness.py\nlocal c = " + to_lua(cfg) + "\n"
    if extra_config:
        text += extra_config.rstrip() + "\n"
    return text + "return c\n"


# --------------------------------------------------------------------------------------
# logs
# --------------------------------------------------------------------------------------

# An error line: the level column of the text format ("<ts> error <message>"), the level of
# the json format, or a line that starts with ERROR (sanitizers, aborts). A warn line that
# quotes PostgreSQL's "ERROR:  ..." is not one.
_ERROR_LINE = re.compile(r'^\S+\s+(?:error|ERROR|fatal|FATAL)\b|"level"\s*:\s*"(?:error|fatal)"'
                         r'|^(?:==\d+==)?ERROR\b')
SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer",
                     "ThreadSanitizer", "MemorySanitizer", "runtime error:")
PERSISTED_RE = re.compile(r"Persisted (?!REPLAYED)(\S+) for tenant (\S+)")
PERSISTED_REPLAY_RE = re.compile(r"Persisted REPLAYED (\S+) for tenant (\S+) \(from event (\d+)\)")
ANY_PERSISTED_RE = re.compile(r"\bPersisted ")


def error_lines(text: str, allow: Sequence[str] = ()) -> list[str]:
    out = []
    for line in text.splitlines():
        if _ERROR_LINE.search(line) and not any(re.search(a, line) for a in allow):
            out.append(line)
    return out


def sanitizer_lines(text: str) -> list[str]:
    return [l for l in text.splitlines() if any(m in l for m in SANITIZER_MARKERS)]


def tail(text: str, n: int = 40) -> str:
    return "\n".join(text.splitlines()[-n:])


# --------------------------------------------------------------------------------------
# eventsink processes
# --------------------------------------------------------------------------------------

class SinkProcess:
    """One eventsink service (and its restarts with the same configuration)."""

    def __init__(self, workdir: Path, config_path: Path, name: str, allow_errors=False,
                 prefix: Sequence[str] = ()):
        self.workdir = workdir
        self.prefix = list(prefix)  # e.g. `ip netns exec NAME`, which execs the service
        self.config_path = config_path
        self.name = name
        self.allow_errors = allow_errors  # True, or a list of regexes of allowed error lines
        self.proc: subprocess.Popen | None = None
        self.logs: list[Path] = []
        self.exit_codes: list[int | None] = []
        self._logf = None

    # ---- lifecycle
    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def log_path(self) -> Path:
        return self.logs[-1]

    def start(self, wait_started: bool = True, timeout: float = 60) -> "SinkProcess":
        binary = eventsink_bin()
        if not binary.exists():
            raise AssertionError(f"eventsink binary not found at {binary} (run make, or set "
                                 f"EVENTSINK_BIN)")
        log = self.workdir / f"{self.name}.run{len(self.logs) + 1}.log"
        self.logs.append(log)
        self.exit_codes.append(None)
        self._logf = open(log, "wb")
        self.proc = subprocess.Popen([*self.prefix, str(binary), "-c", str(self.config_path)],
                                     stdout=self._logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=str(self.workdir),
                                     start_new_session=True)
        register_cleanup(self._cleanup)
        if wait_started:
            self.wait_log(r"started: consuming", timeout)
        return self

    def restart(self, wait_started: bool = True, timeout: float = 60) -> "SinkProcess":
        if self.alive():
            raise AssertionError(f"{self.name} is still running (pid {self.pid}); stop it first")
        return self.start(wait_started, timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _finish(self) -> int:
        assert self.proc is not None
        rc = self.proc.wait()
        self.exit_codes[-1] = rc
        if self._logf:
            self._logf.close()
            self._logf = None
        unregister_cleanup(self._cleanup)
        return rc

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM, waits for the exit and returns the exit code (negative: killed by that
        signal). If it has not exited within the timeout it is killed and the test fails."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=scaled(timeout))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self._finish()
                raise AssertionError(f"{self.name} did not exit within {scaled(timeout):.0f}s "
                                     f"of SIGTERM; killed.\n{tail(self.log_text())}")
        return self._finish()

    def kill9(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        return self._finish()

    def signal(self, sig) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def _cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if self._logf:
            self._logf.close()
            self._logf = None

    # ---- logs
    def log_text(self, run: int | None = None) -> str:
        """The log of one run (1-based; default the current one)."""
        path = self.logs[-1] if run is None else self.logs[run - 1]
        try:
            return path.read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def all_logs_text(self) -> str:
        return "\n".join(self.log_text(i + 1) for i in range(len(self.logs)))

    def wait_log(self, regex: str, timeout: float = 60, count: int = 1):
        """Waits until the current run's log matches regex (count times); returns the last
        match. Fails early if the process exits."""
        pat = re.compile(regex)
        deadline = time.monotonic() + scaled(timeout)
        while True:
            text = self.log_text()
            found = list(pat.finditer(text))
            if len(found) >= count:
                return found[count - 1]
            if not self.alive():
                time.sleep(0.2)
                text = self.log_text()
                found = list(pat.finditer(text))
                if len(found) >= count:
                    return found[count - 1]
                rc = self.proc.poll() if self.proc else None
                raise AssertionError(f"{self.name} exited (code {rc}) before its log matched "
                                     f"{regex!r}:\n{tail(text)}")
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {scaled(timeout):.0f}s waiting for "
                                     f"{regex!r} ({len(found)}/{count} matches) in the log of "
                                     f"{self.name}:\n{tail(text)}")
            time.sleep(0.1)

    def persisted_count(self, run: int | None = None) -> int:
        return len(ANY_PERSISTED_RE.findall(self.log_text(run)))

    def check_logs(self) -> list[str]:
        """Problems for teardown: sanitizer reports always, error lines unless allowed."""
        problems = []
        for i in range(len(self.logs)):
            text = self.log_text(i + 1)
            san = sanitizer_lines(text)
            if san:
                problems.append(f"{self.name} run {i + 1}: sanitizer report:\n" + "\n".join(san[:20]))
            if self.allow_errors is True:
                continue
            allow = self.allow_errors or ()
            errs = error_lines(text, allow)
            if errs:
                problems.append(f"{self.name} run {i + 1} ({self.logs[i]}): {len(errs)} error "
                                f"line(s):\n" + "\n".join(errs[:20]))
        return problems


class SinkFactory:
    """Starts eventsink services for one test; the `sink` fixture tears them down."""

    def __init__(self, workdir: Path, kafka: KafkaBroker | None, test_name: str):
        self.workdir = Path(workdir)
        self.kafka = kafka
        self.sinks: list[SinkProcess] = []
        self.group_id = f"eventsink-{re.sub(r'[^A-Za-z0-9_]', '_', test_name)[:40]}-{uuid.uuid4().hex[:6]}"

    def write_config(self, *, topics: Sequence[str], dsn: str, extra_config: str | None = None,
                     policies: Sequence[str] | None = None, batch: dict | None = None,
                     group_id: str | None = None, overrides: dict | None = None,
                     brokers: str | None = None, name: str = "sink") -> Path:
        cfg = build_config(brokers=brokers or (self.kafka.bootstrap if self.kafka else "127.0.0.1:9"),
                           group_id=group_id or self.group_id, topics=topics, dsn=dsn,
                           http_port=free_port(), metrics_port=free_port(), policies=policies,
                           batch=batch, overrides=overrides)
        d = self.workdir / name
        d.mkdir(parents=True, exist_ok=True)
        path = d / "sink.conf.lua"
        path.write_text(render_config(cfg, extra_config))
        return path

    def __call__(self, *, topics: Sequence[str], dsn: str, extra_config: str | None = None,
                 policies: Sequence[str] | None = None, batch: dict | None = None,
                 group_id: str | None = None, overrides: dict | None = None,
                 allow_errors=False, wait_started: bool = True, timeout: float = 60,
                 brokers: str | None = None, prefix: Sequence[str] = ()) -> SinkProcess:
        name = f"sink{len(self.sinks) + 1}"
        path = self.write_config(topics=topics, dsn=dsn, extra_config=extra_config,
                                 policies=policies, batch=batch, group_id=group_id,
                                 overrides=overrides, name=name, brokers=brokers)
        s = SinkProcess(path.parent, path, name, allow_errors=allow_errors, prefix=prefix)
        self.sinks.append(s)
        s.start(wait_started=wait_started, timeout=timeout)
        return s

    def teardown(self) -> list[str]:
        problems = []
        for s in self.sinks:
            if s.alive():
                try:
                    s.terminate(timeout=30)
                except AssertionError as e:
                    problems.append(str(e))
            problems.extend(s.check_logs())
        return problems


# --------------------------------------------------------------------------------------
# the CLI
# --------------------------------------------------------------------------------------

def run_cli(*args: str, timeout: float = 60, cwd: str | Path | None = None
            ) -> subprocess.CompletedProcess:
    """Runs eventsink with args; returns the CompletedProcess (text stdout/stderr). Fails
    the test on a sanitizer report."""
    binary = eventsink_bin()
    if not binary.exists():
        raise AssertionError(f"eventsink binary not found at {binary}")
    r = subprocess.run([str(binary), *args], capture_output=True, timeout=scaled(timeout),
                       stdin=subprocess.DEVNULL, cwd=str(cwd) if cwd else None)
    out = subprocess.CompletedProcess(r.args, r.returncode,
                                      r.stdout.decode("utf-8", errors="replace"),
                                      r.stderr.decode("utf-8", errors="replace"))
    san = sanitizer_lines(out.stdout + "\n" + out.stderr)
    assert not san, f"sanitizer report from eventsink {' '.join(args)}:\n" + out.stderr[-4000:]
    return out


def spawn_cli(*args: str, cwd: str | Path | None = None) -> subprocess.Popen:
    binary = eventsink_bin()
    p = subprocess.Popen([str(binary), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, cwd=str(cwd) if cwd else None,
                         start_new_session=True)

    def _kill():
        if p.poll() is None:
            p.kill()
    register_cleanup(_kill)
    return p
