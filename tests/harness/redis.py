"""Real `redis-server` processes on free loopback ports in temporary folders.

If no `redis-server` is installed, Debian's package is installed when running as root with
apt-get available; otherwise the harness stops with a message saying what to install.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

__all__ = [
    "RunningCluster",
    "RunningRedis",
    "redis_server_binary",
    "running_redis",
    "running_redis_cluster",
    "running_replica",
]

_READY = "Ready to accept connections"
_START_TIMEOUT_S = 30.0


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=environment)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "redis-server"], check=True, env=environment
        )
        found = shutil.which("redis-server")
        if found:
            return found
    raise RuntimeError(
        "the Redis tests need redis-server: install it (Debian: apt-get install redis-server)"
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class RunningRedis:
    port: int
    directory: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def _wait_until_ready(process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("redis-server exited:\n" + log.read_text(errors="replace"))
        if log.exists() and _READY in log.read_text(errors="replace"):
            return
        time.sleep(0.02)  # polling the server's own log for its readiness line
    raise RuntimeError("redis-server did not become ready:\n" + log.read_text(errors="replace"))


@contextmanager
def running_redis(
    extra: Sequence[str] = (), port: int | None = None, directory: Path | None = None
) -> Iterator[RunningRedis]:
    """A redis-server on 127.0.0.1 in a fresh temporary folder (or `directory`, to restart one
    on its own data), stopped (SIGTERM, then SIGKILL) on exit."""
    binary = redis_server_binary()
    with tempfile.TemporaryDirectory(prefix="replaybus-redis-") as folder:
        directory = directory or Path(folder)
        chosen = port or free_port()
        log = directory / f"redis-{time.monotonic_ns()}.log"  # a restart's own readiness line
        process = subprocess.Popen(
            [
                binary,
                "--port",
                str(chosen),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(directory),
                "--logfile",
                str(log),
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_until_ready(process, log)
            yield RunningRedis(chosen, directory, process)
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@dataclass(frozen=True)
class RunningCluster:
    nodes: tuple[RunningRedis, ...]

    @property
    def url(self) -> str:
        return self.nodes[0].url


@contextmanager
def running_redis_cluster(masters: int = 3) -> Iterator[RunningCluster]:
    """`masters` redis-server processes joined into a Redis Cluster (no replicas) with
    `redis-cli --cluster create`, on loopback, each in its own temporary folder."""
    with contextlib.ExitStack() as stack:
        nodes = []
        for _ in range(masters):
            port = free_port()
            extra = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                f"nodes-{port}.conf",
                "--cluster-port",
                str(free_port()),  # the bus port, else port + 10000
            ]
            nodes.append(stack.enter_context(running_redis(extra, port=port)))
        addresses = [f"127.0.0.1:{node.port}" for node in nodes]
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            states = [
                subprocess.run(
                    ["redis-cli", "-p", str(node.port), "cluster", "info"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                ).stdout
                for node in nodes
            ]
            if all("cluster_state:ok" in state for state in states):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not become ready:\n" + "\n".join(states))
            time.sleep(0.05)  # polling the cluster's own state
        yield RunningCluster(tuple(nodes))


def forget_birth_marks(*servers: RunningRedis) -> None:
    """Delete every birth mark (`rb:birth…`), so the next engine call on each slot finds the
    store newly born at that call's clock: a test running its own clock on a shared server
    then starts on a store of its own time."""
    for server in servers:
        client = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=10)
        try:
            for mark in list(client.scan_iter(match="rb:birth*", count=1000)):
                client.delete(mark)  # one at a time: on a Cluster node each is in its own slot
        finally:
            client.close()


@contextmanager
def running_replica(primary_port: int, extra: Sequence[str] = ()) -> Iterator[RunningRedis]:
    """A redis-server replicating the one on `primary_port` (`--replicaof`), yielded once it
    confirms the primary's writes (what WAIT counts): the initial copy is loaded and the
    primary streams to it. The primary is set to send that copy at once (it waits 5 s by
    default for more replicas to share it)."""
    primary = redis.Redis(host="127.0.0.1", port=primary_port, socket_timeout=10)
    try:
        primary.config_set("repl-diskless-sync-delay", 0)
        with running_redis(["--replicaof", "127.0.0.1", str(primary_port), *extra]) as replica:
            deadline = time.monotonic() + _START_TIMEOUT_S
            while not _confirming(primary, replica.port):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the replica on {replica.port} never came online")
                time.sleep(0.02)  # polling the primary's own state
            yield replica
    finally:
        primary.close()


def _confirming(primary: redis.Redis, port: int) -> bool:
    """Whether the replica on `port` is online and every online replica confirms a write (a
    PUBLISH: replicated, yet it leaves no key behind)."""
    replicas = [
        value
        for name, value in primary.info("replication").items()
        if name.startswith("slave") and isinstance(value, dict) and value.get("state") == "online"
    ]
    if not any(replica.get("port") == port for replica in replicas):
        return False
    primary.publish("harness:replication-check", "")
    confirmed = primary.wait(len(replicas), 100)
    return int(confirmed) >= len(replicas)
