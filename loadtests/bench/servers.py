"""The processes a benchmark run measures, each pinned to the server core (when given one):
replaybus (memory or Redis engine, one or more workers), a bare Starlette endpoint, a Starlette
fan-out app (StreamingResponse and sse-starlette's EventSourceResponse), and the generator's
do-nothing server for its own ceiling."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from loadtests.bench import gen
from loadtests.bench.peers._process import stop, taskset_prefix

__all__ = [
    "CLIENT_ID",
    "CLIENT_SECRET",
    "Server",
    "pin",
    "rss_kib",
    "running_bare_starlette",
    "running_ceiling",
    "running_fanout_app",
    "running_replaybus",
]

CLIENT_ID = "bench"
CLIENT_SECRET = "bench-secret-0123456789"
_LISTENING = re.compile(rb"(http://127\.0\.0\.1:\d+)")
_START_S = 30.0


@dataclass(frozen=True)
class Server:
    name: str
    base_url: str
    pid: int

    def token(self) -> str:
        form = {"grant_type": "client_credentials", "client_id": CLIENT_ID}
        form["client_secret"] = CLIENT_SECRET
        # Generous: with several workers, the first request waits in the listening socket's
        # backlog until a worker has started, and a busy machine starts them slowly.
        response = httpx.post(
            f"{self.base_url}/v1/oauth/token", data=form, trust_env=False, timeout=_START_S
        )
        response.raise_for_status()
        return str(response.json()["access_token"])


def pin(pid: int, cpu: int | None) -> None:
    """Move an already running process (all its threads) to one core, as `taskset_prefix`
    starts one there (for the harness's Redis)."""
    if not taskset_prefix(cpu):
        return
    subprocess.run(["taskset", "-a", "-cp", str(cpu), str(pid)], check=True, capture_output=True)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


@contextmanager
def _process(
    name: str, command: list[str], env: Mapping[str, str], cpu: int | None
) -> Iterator[Server]:
    """Start `command`, wait for the `http://127.0.0.1:<port>` it prints, stop it on exit."""
    process = subprocess.Popen(
        [*taskset_prefix(cpu), *command],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + _START_S
        seen = b""
        base = None
        while time.monotonic() < deadline and base is None:
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                raise RuntimeError(f"{name} exited: {seen.decode(errors='replace')}")
            seen += line
            match = _LISTENING.search(line)
            base = match.group(1).decode() if match else None
        if base is None:
            raise RuntimeError(f"{name} did not start: {seen.decode(errors='replace')}")
        # Keep draining its output (into a log kept for a failed run) so a chatty server
        # never blocks on a full pipe.
        log = Path(tempfile.gettempdir()) / f"replaybus-bench-{process.pid}.log"
        with log.open("wb") as sink:
            drain = subprocess.Popen(["cat"], stdin=process.stdout, stdout=sink)
        try:
            yield Server(name, base, process.pid)
        finally:
            drain.kill()
    finally:
        stop(process)


@contextmanager
def running_replaybus(
    cpu: int | None,
    redis_url: str | None = None,
    extra: Mapping[str, str] | None = None,
    workers: int = 1,
) -> Iterator[Server]:
    env = {
        "REPLAYBUS_PORT": "0",
        "REPLAYBUS_ACCESS_LOG": "false",
        "REPLAYBUS_LOG_LEVEL": "warning",
        "REPLAYBUS_BOOTSTRAP_CLIENT_ID": CLIENT_ID,
        "REPLAYBUS_BOOTSTRAP_CLIENT_SECRET": CLIENT_SECRET,
        "REPLAYBUS_SUBSCRIBER_QUEUE_SIZE": "20000",
        # The bench's subscribers are all one client: let it hold every stream.
        "REPLAYBUS_SSE_MAX_STREAMS": "20000",
        "REPLAYBUS_SSE_MAX_STREAMS_PER_CLIENT": "20000",
        **({"REPLAYBUS_REDIS_URL": redis_url} if redis_url else {}),
        "REPLAYBUS_WORKERS": str(workers),
        **(extra or {}),
    }
    name = "replaybus+redis" if redis_url else "replaybus (memory)"
    if workers > 1:
        name += f", {workers} workers"
    command = [sys.executable, "-m", "api.cli", "serve"]
    with _process(name, command, env, cpu) as server:
        yield server


@contextmanager
def running_bare_starlette(cpu: int | None) -> Iterator[Server]:
    command = [sys.executable, "-m", "loadtests.bench.bare_app"]
    with _process("bare Starlette", command, {}, cpu) as server:
        yield server


@contextmanager
def running_fanout_app(cpu: int | None) -> Iterator[Server]:
    command = [sys.executable, "-m", "loadtests.bench.fanout_app"]
    with _process("Starlette fan-out", command, {}, cpu) as server:
        yield server


@contextmanager
def running_ceiling(cpu: int | None) -> Iterator[Server]:
    """The generator's own do-nothing server (compiled, so its ceiling is the generator's)."""
    with _process("do-nothing server", [str(gen.binary()), "serve-nothing"], {}, cpu) as server:
        yield server
