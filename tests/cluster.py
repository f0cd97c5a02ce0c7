"""A real Redis Cluster for the tests: three masters with one replica each.

Started from the redis-server binary the embedded default uses
(:func:`icetime.redis_embed.find_redis_server`), created with the redis-cli next to it
(``redis-cli --cluster create``), every node on 127.0.0.1. ``cluster-node-timeout`` is
short (:data:`NODE_TIMEOUT_MS`), so when a master is killed its replica takes over
within about two seconds. Nothing is persisted: each node lives in a temporary folder.
"""
from __future__ import annotations

import random
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from redis import Redis
from redis.cluster import key_slot
from redis.exceptions import RedisError

from icetime.redis_embed import find_redis_server

NODES = 6
NODE_TIMEOUT_MS = 1000
#: Ports tried for a node before the cluster gives up (a taken port means another try).
PORT_TRIES = 20
#: How long the cluster may take to agree on its layout, at start and after a failover.
SETTLE_S = 30.0


def _free(port: int) -> bool:
    """Whether ``port`` and its cluster-bus port (+10000) can be bound on 127.0.0.1 now."""
    for p in (port, port + 10000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                return False
    return True


@dataclass
class Node:
    port: int
    folder: Path
    proc: subprocess.Popen[bytes] | None = None

    def client(self) -> Redis:
        return Redis(host="127.0.0.1", port=self.port, socket_timeout=2,
                     socket_connect_timeout=2)


@dataclass
class Cluster:
    """The cluster's nodes; :attr:`url` is what icetime's ``redis.url`` takes."""

    folder: Path
    nodes: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.live()[0].port}"

    def live(self) -> list[Node]:
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]

    # ------------------------------------------------------------ start, stop
    def start(self) -> None:
        server = find_redis_server()
        for i in range(NODES):
            self.nodes.append(self._start_node(server, self.folder / f"node{i}"))
        cli = Path(server).with_name("redis-cli")
        subprocess.run([str(cli), "--cluster", "create",
                        *(f"127.0.0.1:{n.port}" for n in self.nodes),
                        "--cluster-replicas", "1", "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)
        self.settle()

    def _start_node(self, server: str, folder: Path) -> Node:
        folder.mkdir(parents=True)
        for _ in range(PORT_TRIES):
            port = random.randrange(20000, 30000)  # the bus port (+10000) stays < 40000
            if not _free(port):
                continue
            node = Node(port, folder)
            self._launch(server, node)
            if self._answers(node):
                return node
            self._stop(node)  # lost the port to someone else between the check and bind
        raise RuntimeError(f"no free port for a cluster node after {PORT_TRIES} tries")

    @staticmethod
    def _launch(server: str, node: Node) -> None:
        node.proc = subprocess.Popen(
            [server, "--port", str(node.port), "--bind", "127.0.0.1",
             "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
             "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
             # A replica takes over however long it was apart from its master.
             "--cluster-replica-validity-factor", "0",
             "--save", "", "--appendonly", "no", "--dir", str(node.folder),
             "--logfile", "redis.log"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @staticmethod
    def _answers(node: Node) -> bool:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            assert node.proc is not None
            if node.proc.poll() is not None:
                return False
            try:
                with node.client() as r:
                    if r.ping():
                        return True
            except RedisError:
                time.sleep(0.02)
        return False

    @staticmethod
    def _stop(node: Node) -> None:
        if node.proc is not None and node.proc.poll() is None:
            node.proc.kill()
            node.proc.wait(10)

    def close(self) -> None:
        for node in self.nodes:
            self._stop(node)

    # ------------------------------------------------------------ layout
    def layout(self) -> dict[int, tuple[int, int]]:
        """Slot range start -> (end, master's port), as a live node sees it now."""
        for node in self.live():
            try:
                with node.client() as r:
                    slots = r.execute_command("CLUSTER SLOTS")
            except RedisError:
                continue
            return {int(s[0]): (int(s[1]), int(s[2][1])) for s in slots}
        raise RuntimeError("no cluster node answers")

    def master_of(self, key: str) -> int:
        """The port of the master serving ``key``'s slot now."""
        slot = key_slot(key.encode())
        for start, (end, port) in self.layout().items():
            if start <= slot <= end:
                return port
        raise RuntimeError(f"slot {slot} is not served")

    def node(self, port: int) -> Node:
        return next(n for n in self.nodes if n.port == port)

    def settle(self, timeout: float = SETTLE_S) -> None:
        """Wait until every live node says the cluster is ok and serves all slots from a
        live master."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._settled():
                return
            time.sleep(0.1)
        raise TimeoutError(f"the cluster did not settle in {timeout} s")

    def _settled(self) -> bool:
        live = {n.port for n in self.live()}
        try:
            for node in self.live():
                with node.client() as r:
                    info = r.execute_command("CLUSTER INFO")  # parsed into a dict
                    if info.get("cluster_state") != "ok":
                        return False
            layout = self.layout()
        except (RedisError, RuntimeError):
            return False
        covered = sum(end - start + 1 for start, (end, _) in layout.items())
        return covered == 16384 and all(port in live for _, port in layout.values())

    # ------------------------------------------------------------ faults
    def kill(self, port: int) -> None:
        """SIGKILL the node on ``port`` (a master: its replica takes over)."""
        node = self.node(port)
        assert node.proc is not None
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(10)

    def restart(self, port: int) -> None:
        """Start a killed node again on its files; it rejoins as a replica."""
        node = self.node(port)
        self._launch(find_redis_server(), node)
        if not self._answers(node):
            raise RuntimeError(f"node {port} did not come back")


def competitions_on_different_masters(cluster: Cluster, n: int = 2,
                                      prefix: str = "c") -> list[str]:
    """``n`` competition ids (``<prefix><number>``) whose keys hash to ``n`` different
    masters."""
    from icetime import keys

    chosen: dict[int, str] = {}
    for i in range(1000):
        name = f"{prefix}{i}"
        chosen.setdefault(cluster.master_of(keys.raw_stream(name)), name)
        if len(chosen) == n:
            return list(chosen.values())
    raise RuntimeError("the cluster has fewer masters than competitions wanted")
