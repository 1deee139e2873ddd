"""A real three-master Redis Cluster for tests: three redis-servers on free ports, joined by redis-cli.

Each node runs in its own temporary directory (its ``nodes.conf`` lives there) with cluster mode on; the
cluster is created with ``redis-cli --cluster create … --cluster-replicas 0`` and is ready once every node
reports ``cluster_state:ok``. Nothing here touches the user's Redis on 6379. A missing binary fails the
test run with a message that says what to install — it never skips.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from tests.support.servers import free_port, require_binary

READY_TIMEOUT_S = 30.0
#: a cluster node also listens on its port + 10000 (the cluster bus)
BUS_PORT_OFFSET = 10_000


def free_cluster_port(taken: set[int]) -> int:
    """A free port whose cluster-bus port (port + 10000) is free and valid too."""
    for _ in range(200):
        port = free_port()
        if port in taken or port + BUS_PORT_OFFSET > 65_535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + BUS_PORT_OFFSET))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair (port, port + 10000) for a cluster node")


class RedisCluster:
    """``masters`` redis-server processes in cluster mode, joined into one cluster with no replicas."""

    def __init__(self, masters: int = 3):
        hint = "install Redis (Debian: apt-get install redis-server redis-tools)"
        self.server_binary = require_binary("redis-server", hint)
        self.cli_binary = require_binary("redis-cli", hint)
        self.ports: list[int] = []
        for _ in range(masters):
            self.ports.append(free_cluster_port(set(self.ports)))
        self.dirs = [Path(tempfile.mkdtemp(prefix=f"mmaker-cluster-{port}-")) for port in self.ports]
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """The mmaker cluster URL of the first node: ``redis+cluster://127.0.0.1:port/0``."""
        return f"redis+cluster://127.0.0.1:{self.ports[0]}/0"

    def node_url(self, index: int) -> str:
        """A plain ``redis://`` URL of one node (for direct, node-local checks)."""
        return f"redis://127.0.0.1:{self.ports[index]}/0"

    def start(self) -> RedisCluster:
        """Start every node, create the cluster, and wait until every node says ``cluster_state:ok``."""
        try:
            for port, directory in zip(self.ports, self.dirs, strict=True):
                cmd = [self.server_binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)]
                cmd += ["--cluster-enabled", "yes", "--cluster-config-file", str(directory / "nodes.conf")]
                cmd += ["--cluster-node-timeout", "5000", "--save", "", "--appendonly", "no"]
                self.procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            for index in range(len(self.ports)):
                self._wait(index, lambda c: bool(c.ping()), "answer PING")
            nodes = [f"127.0.0.1:{port}" for port in self.ports]
            created = subprocess.run(
                [self.cli_binary, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            if created.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed:\n{created.stdout}\n{created.stderr}")
            for index in range(len(self.ports)):
                self._wait(index, lambda c: c.cluster("info")["cluster_state"] == "ok", "reach cluster_state:ok")
                self._wait(index, lambda c: len(c.cluster("nodes")) == len(self.ports), "see every node")
            return self
        except BaseException:
            self.stop()
            raise

    def _wait(self, index: int, ready: object, what: str) -> None:
        client = redis.Redis.from_url(self.node_url(index), socket_timeout=1, decode_responses=True)
        deadline = time.monotonic() + READY_TIMEOUT_S
        try:
            while True:
                try:
                    if ready(client):  # type: ignore[operator]
                        return
                except (redis.RedisError, KeyError):
                    pass
                if self.procs[index].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"cluster node on port {self.ports[index]} did not {what}")
                time.sleep(0.05)
        finally:
            client.close()

    def client(self) -> redis.RedisCluster:
        """A redis-py cluster client (text replies)."""
        return redis.RedisCluster(host="127.0.0.1", port=self.ports[0], decode_responses=True)

    def flush(self) -> None:
        """Empty every node."""
        for index in range(len(self.ports)):
            node = redis.Redis.from_url(self.node_url(index))
            try:
                node.flushall()
            finally:
                node.close()

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL) and remove their directories."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = []
        for directory in self.dirs:
            shutil.rmtree(directory, ignore_errors=True)
