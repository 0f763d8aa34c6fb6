"""A network of the test's own, for partitions that drop packets (issue 16).

The service runs inside a network namespace the test makes (`ip netns add`), joined to the
host by one veth pair per peer: `pg`, `kafka`, `api`. The host end of a link has the address
10.231.<k>.1, the namespace end 10.231.<k>.2 (k the link's own, from a block no other run
uses), and both ends know each
other's hardware address for good (permanent neighbour entries), so that cutting a link
drops packets silently, as a broken switch or a firewall does: nothing answers, nothing
refuses, TCP keeps retransmitting, a new connection waits for its timeout. cut() takes the
host end down; heal() brings it up, and the connections still open carry on.

The host reaches its own end's address while the link is down (a local address), so a test
can go on producing to a broker on the Kafka link, or querying PostgreSQL on the pg link,
while the service cannot. Root only (the CI machine runs as root).
"""

from __future__ import annotations

import os
import random
import subprocess
import uuid
from typing import Sequence

import harness

PREFIX = "es-test-"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check,
                          timeout=30)


def remove_stale() -> None:
    """Deletes the namespaces that runs no longer alive left behind (their veth pairs go
    with them); a name holds the pid of the process that made it."""
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(PREFIX):
            continue
        pid = name[len(PREFIX):].split("-")[0]
        if not (pid.isdigit() and harness._pid_alive(int(pid))):
            _ip("netns", "delete", name, check=False)


def _free_block() -> int:
    """A block of 4 subnets 10.231.<4b..4b+3>.0/30 that no address of the host is in, so
    that runs at once (a test suite and a chaos run) do not collide."""
    used = _ip("-o", "addr", "show", check=False).stdout
    for b in random.sample(range(64), 64):
        if all(f" 10.231.{4 * b + k}." not in used for k in range(4)):
            return b
    raise RuntimeError("no free 10.231.x.0/30 block for a test network")


class Namespace:
    """A network namespace with one veth link to the host per name in `links`."""

    def __init__(self, links: Sequence[str] = ("pg", "kafka", "api")):
        if os.geteuid() != 0:
            raise RuntimeError("a network namespace needs root (the CI machine runs as root)")
        remove_stale()
        if len(links) > 4:
            raise ValueError("at most 4 links")
        self.name = f"{PREFIX}{os.getpid()}-{uuid.uuid4().hex[:4]}"
        block = _free_block()
        self.links = {link: 4 * block + k for k, link in enumerate(links)}
        self._macs: dict[str, tuple[str, str]] = {}
        _ip("netns", "add", self.name)
        harness.register_cleanup(self.remove)
        _ip("-n", self.name, "link", "set", "lo", "up")
        for link, k in self.links.items():
            self._add_link(link, k)

    def _names(self, link: str) -> tuple[str, str]:
        k = self.links[link]
        return f"esh{k}-{self.name[-4:]}", f"esn{k}"

    def _add_link(self, link: str, k: int) -> None:
        host_if, ns_if = self._names(link)
        _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", self.name)
        _ip("addr", "add", f"{self.host_addr(link)}/30", "dev", host_if)
        _ip("-n", self.name, "addr", "add", f"{self.ns_addr(link)}/30", "dev", ns_if)
        _ip("link", "set", host_if, "up")
        _ip("-n", self.name, "link", "set", ns_if, "up")
        host_mac = open(f"/sys/class/net/{host_if}/address").read().strip()
        ns_mac = subprocess.run(["ip", "netns", "exec", self.name, "cat",
                                 f"/sys/class/net/{ns_if}/address"], capture_output=True,
                                text=True, check=True).stdout.strip()
        self._macs[link] = (host_mac, ns_mac)
        _ip("-n", self.name, "neigh", "replace", self.host_addr(link), "lladdr", host_mac,
            "dev", ns_if, "nud", "permanent")
        self._host_neighbour(link)

    def _host_neighbour(self, link: str) -> None:
        _ip("neigh", "replace", self.ns_addr(link), "lladdr", self._macs[link][1], "dev",
            self._names(link)[0], "nud", "permanent")

    def host_addr(self, link: str) -> str:
        return f"10.231.{self.links[link]}.1"

    def ns_addr(self, link: str) -> str:
        return f"10.231.{self.links[link]}.2"

    def exec_prefix(self) -> list[str]:
        """The command prefix that runs a program inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def cut(self, link: str) -> None:
        """Packets on the link are dropped from now on, both ways."""
        _ip("link", "set", self._names(link)[0], "down")

    def heal(self, link: str) -> None:
        _ip("link", "set", self._names(link)[0], "up")
        self._host_neighbour(link)  # in case taking the link down flushed it

    def remove(self) -> None:
        _ip("netns", "delete", self.name, check=False)
        harness.unregister_cleanup(self.remove)
