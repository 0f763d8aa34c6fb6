"""A real three-node Apache Kafka cluster for the tests (issue 16): KRaft, every node a
broker and a controller (tests/kafka/broker.sh), replication factor 3 and
min.insync.replicas 2 for every topic, the internal ones included. Killing one node (the
leader of the busiest partitions, say) leaves a majority of controllers and two in-sync
replicas of every partition: leadership moves and writes with acks=all go on."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import harness
from harness import KafkaBroker, wait_for


class KafkaCluster(KafkaBroker):
    """Three KafkaBroker nodes seen as one broker: the same helpers (produce, consume,
    admin, create_topic...) over a bootstrap list of all three."""

    def __init__(self, directory: Path, host: str = harness.LOOPBACK, nodes: int = 3):
        self.nodes = [KafkaBroker(Path(directory) / f"node{i}", host=host)
                      for i in range(1, nodes + 1)]
        super().__init__(directory, port=self.nodes[0].port, host=host)
        self.bootstrap = ",".join(n.bootstrap for n in self.nodes)
        self.replication = min(3, nodes)
        voters = ",".join(f"{i}@{harness.LOOPBACK}:{n.port + 1}"
                          for i, n in enumerate(self.nodes, start=1))
        for i, n in enumerate(self.nodes, start=1):
            n.node_env = {"BROKER_NODE_ID": str(i), "BROKER_VOTERS": voters,
                          "BROKER_RF": str(self.replication),
                          "BROKER_MIN_ISR": str(max(1, self.replication - 1))}

    def start(self) -> None:
        """Starts every node at once (each listens once a majority of controllers is up)."""
        harness.register_cleanup(self._cleanup)
        errors: list[BaseException] = []

        def one(n: KafkaBroker) -> None:
            try:
                n.start()
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)
        threads = [threading.Thread(target=one, args=(n,)) for n in self.nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        wait_for(lambda: len(self.admin().list_topics(timeout=5).brokers) == len(self.nodes),
                 120, what="every node of the Kafka cluster in its metadata")

    def stop(self) -> None:
        self._admin = None
        threads = [threading.Thread(target=n.stop) for n in self.nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        harness.unregister_cleanup(self._cleanup)

    def _cleanup(self) -> None:
        self.thaw()
        self.stop()

    def freeze(self) -> None:
        for n in self.nodes:
            n.freeze()

    def thaw(self) -> None:
        for n in self.nodes:
            n.thaw()

    @staticmethod
    def clean_stale(directory: Path) -> None:
        directory = Path(directory)
        for node in sorted(directory.glob("node*")):
            KafkaBroker.clean_stale(node)
        KafkaBroker.clean_stale(directory)

    # ---- one node
    def node_of(self, node_id: int) -> KafkaBroker:
        return self.nodes[node_id - 1]

    def busiest_leader(self, topic: str) -> int:
        """The node id leading most of the topic's partitions."""
        md = self.admin().list_topics(topic=topic, timeout=10)
        leaders = [p.leader for p in md.topics[topic].partitions.values() if p.leader >= 0]
        return max(set(leaders), key=leaders.count)

    def kill_node(self, node_id: int) -> None:
        """The node's process killed with SIGKILL, as a host crash ends it (data kept)."""
        n = self.node_of(node_id)
        pid = int((n.dir / "pid").read_text().strip())
        harness._kill_pid(pid, signal.SIGKILL)
        wait_for(lambda: not harness._pid_alive(pid), 30, what=f"Kafka node {node_id} gone")
        harness.unregister_cleanup(n._cleanup)

    def start_node(self, node_id: int) -> None:
        self.node_of(node_id).start()

    def ensure_up(self) -> None:
        """Starts what is down: the whole cluster, or the nodes that are not listening."""
        down = [n for n in self.nodes if not harness.port_open(n.port, n.host)]
        if len(down) == len(self.nodes):
            self.start()
        for n in down if len(down) < len(self.nodes) else []:
            n.start()

    def in_sync(self, topic: str) -> bool:
        """Whether every partition of the topic has a leader and all its replicas in sync."""
        md = self.admin().list_topics(topic=topic, timeout=10)
        t = md.topics.get(topic)
        return (t is not None and t.error is None and
                all(p.leader >= 0 and len(p.isrs) == len(p.replicas)
                    for p in t.partitions.values()))

