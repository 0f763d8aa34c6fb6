"""Slow clients (slowloris): connections that send their request a byte a second, from many
loopback addresses, must not keep the API from answering. Every request has a deadline for
its head and body (http.request_timeout_s, 10 s) that a trickle of bytes does not reset;
the connections are bounded per address (http.max_connections_per_ip) and in all
(http.max_connections), and near that limit each new connection closes one still sending
its request, the oldest of the address holding the most (src/http_guard.c)."""

from __future__ import annotations

import http.client
import socket
import threading
import time

import harness
from apihelpers import api_for, listen_address, ok_json

SLOW_SOURCES = [f"127.0.0.{i}" for i in range(2, 10)]  # 8 addresses


class Trickle:
    """n sockets from the given source addresses, each sending one byte a second: a
    request head that never ends, or (body=True) a whole head and then a body that
    does."""

    def __init__(self, host: str, port: int, n: int, sources, body_every: int = 0):
        self.socks: list[socket.socket] = []
        self.pending: dict[socket.socket, bytes] = {}
        self.refused = 0
        for i in range(n):
            try:
                s = socket.create_connection((host, port), timeout=5,
                                             source_address=(sources[i % len(sources)], 0))
            except OSError:
                self.refused += 1
                continue
            if body_every and i % body_every == 0:
                # the head at once, then a body of 100 bytes a byte a second
                s.sendall(b"POST /replay/batch HTTP/1.1\r\nHost: x\r\n"
                          b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n")
                self.pending[s] = b'{"ids":[1],"reason":"' + b"r" * 76 + b'"}'
            else:
                self.pending[s] = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
            self.socks.append(s)
        self.closed: dict[socket.socket, float] = {}
        self.t0 = time.monotonic()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            for s in self.socks:
                if s in self.closed:
                    continue
                data = self.pending[s]
                try:
                    s.send(data[:1])
                    self.pending[s] = data[1:] or b"a"
                except OSError:
                    self.closed[s] = time.monotonic() - self.t0
            self.stop.wait(1.0)

    def open_count(self) -> int:
        """Sockets the server has not closed (a closed one reads EOF or fails)."""
        n = 0
        for s in self.socks:
            if s in self.closed:
                continue
            s.setblocking(False)
            try:
                got = s.recv(4096)
                if got == b"":
                    self.closed[s] = time.monotonic() - self.t0
                    continue
            except BlockingIOError:
                pass
            except OSError:
                self.closed[s] = time.monotonic() - self.t0
                continue
            finally:
                if s.fileno() >= 0:
                    s.setblocking(True)
            n += 1
        return n

    def close(self):
        self.stop.set()
        self.thread.join(10)
        for s in self.socks:
            s.close()


def timed_get(host: str, port: int, path: str, source: str = "127.0.0.1",
              timeout: float = 5) -> tuple[int | str, float]:
    t0 = time.monotonic()
    c = http.client.HTTPConnection(host, port, timeout=timeout, source_address=(source, 0))
    try:
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        return r.status, time.monotonic() - t0
    except (OSError, http.client.HTTPException) as e:
        return type(e).__name__, time.monotonic() - t0
    finally:
        c.close()


def _probe(host, port, seconds: float, problems: list, source="127.0.0.1"):
    """/health and /ready from `source`, each within a second, for `seconds`."""
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        for path in ("/health", "/ready"):
            status, took = timed_get(host, port, path, source)
            n += 1
            if status != 200 or took > harness.scaled(1.0):
                problems.append(f"{path} from {source}: {status} in {took:.2f} s")
        time.sleep(0.2)
    return n


def test_256_slow_connections_from_8_addresses_do_not_keep_health_away(kafka, db, topic, sink):
    s = sink(topics=[topic], dsn=db)
    api = api_for(s)
    host, port = listen_address(s, "http").rsplit(":", 1)
    port = int(port)
    ok_json(api.get("/health"))
    slow = Trickle(host, port, 256, SLOW_SOURCES, body_every=8)
    try:
        time.sleep(2)
        held = slow.open_count()
        print(f"256 slow connections: {held} held, {slow.refused} refused")
        assert slow.refused == 0 and held >= 250, (held, slow.refused)
        problems: list[str] = []
        probes = _probe(host, port, 5, problems)
        # the metrics listener has a guard of its own and is not affected
        mhost, mport = listen_address(s, "metrics").rsplit(":", 1)
        status, took = timed_get(mhost, int(mport), "/metrics")
        assert status == 200, status
        assert not problems, f"{len(problems)} of {probes} probes failed: {problems[:10]}"
        # a byte a second does not reset the deadline: 10 s after they were opened, the
        # server closes them, head or body
        assert slow.open_count() >= 200, "closed long before the deadline"
        harness.wait_for(lambda: slow.open_count() == 0, harness.scaled(10), interval=0.5,
                         what="the server to close the slow connections")
        took = max(slow.closed.values())
        first = min(slow.closed.values())
        print(f"slow connections closed between {first:.1f} s and {took:.1f} s")
        assert first >= 9, f"a slow connection was closed after {first:.1f} s, before the deadline"
        assert took <= harness.scaled(14), took
        # the sweeper writes its line just after it closes them: wait for it, not by luck
        s.wait_log(r"did not send a whole request within 10000 ms", timeout=15)
    finally:
        slow.close()
    # everyone is served again, the slow addresses too
    for src in ("127.0.0.1", SLOW_SOURCES[0]):
        assert timed_get(host, port, "/health", src)[0] == 200
    assert s.alive()


def test_slow_connections_past_the_limit_make_room_for_new_ones(kafka, db, topic, sink):
    """With a small limit (64 in all, 56 before newcomers close the oldest slow ones), 300
    slow connections from 12 addresses still leave /health and /ready answered, and a
    keep-alive client that asks promptly is not the one closed."""
    s = sink(topics=[topic], dsn=db, overrides={"http": {
        "max_connections": 64, "max_connections_per_ip": 32, "request_timeout_s": 30}})
    host, port = listen_address(s, "http").rsplit(":", 1)
    port = int(port)
    sources = [f"127.0.0.{i}" for i in range(20, 32)]
    slow = Trickle(host, port, 300, sources)
    try:
        harness.wait_for(lambda: slow.open_count() <= 64, 15, interval=0.5,
                         what="the server to hold at most 64 of 300 slow connections")
        print(f"300 slow connections against a limit of 64: {slow.open_count()} held")
        problems: list[str] = []
        probes = _probe(host, port, 4, problems)
        assert not problems, f"{len(problems)} of {probes} probes failed: {problems[:10]}"
        # a client that keeps its connection and asks again at once is served each time
        api = api_for(s)
        for _ in range(10):
            ok_json(api.get("/health"))
        # new slow clients keep pushing the older ones out, and /health stays reachable
        more = Trickle(host, port, 100, sources)
        try:
            probes = _probe(host, port, 3, problems, source="127.0.0.200")
            assert not problems, f"{len(problems)} of {probes} probes failed: {problems[:10]}"
        finally:
            more.close()
        assert "to make room for new ones" in s.log_text() or \
            harness.wait_for(lambda: "to make room" in s.log_text(), 15, what="the log line")
    finally:
        slow.close()
    assert s.alive()


def test_a_flood_of_new_connections_does_not_keep_another_address_out(kafka, db, topic, sink):
    """Connections opened as fast as one thread can from 12 addresses, each sending half a
    request head: the ones that make room are the flood's (the address holding the most
    unfinished connections gives up its oldest), and a burst is not refused while the
    threads of the connections just closed are still finishing (libmicrohttpd's own limit
    is above http.max_connections by half of it). /health and /ready from another address
    are answered every time."""
    s = sink(topics=[topic], dsn=db, overrides={"http": {
        "max_connections": 64, "max_connections_per_ip": 32, "request_timeout_s": 30}})
    host, port = listen_address(s, "http").rsplit(":", 1)
    port = int(port)
    sources = [f"127.0.0.{i}" for i in range(40, 52)]
    stop = threading.Event()
    socks: list[socket.socket] = []
    opened = [0]

    def flood():
        i = 0
        while not stop.is_set():
            try:
                c = socket.create_connection((host, port), timeout=5,
                                             source_address=(sources[i % len(sources)], 0))
                c.send(b"GET /health HTTP/1.1\r\n")
                socks.append(c)
                opened[0] += 1
            except OSError:
                pass
            i += 1
            if i % 50 == 0:
                time.sleep(0.05)

    t = threading.Thread(target=flood, daemon=True)
    t.start()
    try:
        harness.wait_for(lambda: opened[0] >= 200, 15, what="the flood to open 200 connections")
        problems: list[str] = []
        probes = _probe(host, port, 6, problems, source="127.0.0.201")
        print(f"{opened[0]} flood connections opened; {probes} probes")
        assert not problems, f"{len(problems)} of {probes} probes failed: {problems[:10]}"
    finally:
        stop.set()
        t.join(10)
        for c in socks:
            c.close()
    harness.wait_for(lambda: "to make room for new ones" in s.log_text(), 15, what="the log line")
    assert s.alive()
