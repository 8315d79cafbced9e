"""Several `replaybus serve --workers 2` nodes on one Redis, and killing one of them for real.

A node is a supervisor process with spawned children (its workers and multiprocessing's
resource tracker), all in the test's own process group, so a node is killed by PID: SIGKILL to
the supervisor first (so it cannot replace a worker), then to every descendant found under
/proc. The killed processes are reaped here rather than left as zombies: while killing, this
process is made the children's subreaper (Linux `PR_SET_CHILD_SUBREAPER`), so the orphaned
workers become its children and `waitpid` collects them.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.e2e.server import RunningServer, run_server
from tests.harness.nginx import descendants

__all__ = [
    "KilledNode",
    "kill_node",
    "node_env",
    "running_nodes",
    "wait_holding",
    "wait_ready",
]

_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37
_REAP_TIMEOUT_S = 15.0


def node_env(
    redis_url: str, signing_key_pem: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Settings every node of the cluster shares: one Redis, one signing key, two workers."""
    return {
        "REPLAYBUS_REDIS_URL": redis_url,
        "REPLAYBUS_WORKERS": "2",
        "REPLAYBUS_SIGNING_KEY": signing_key_pem,
        "REPLAYBUS_BAYEUX_TIMEOUT": "5s",
        "REPLAYBUS_SHUTDOWN_GRACE": "2s",
        **(extra or {}),
    }


@contextmanager
def running_nodes(count: int, env: Mapping[str, str]) -> Iterator[list[RunningServer]]:
    """`count` nodes with the same settings; each is stopped (SIGTERM) on exit unless it was
    killed meanwhile."""
    with ExitStack() as stack:
        yield [stack.enter_context(run_server(env)) for _ in range(count)]


async def wait_ready(base_urls: list[str], timeout: float = 30.0) -> None:
    """Until `GET /readyz` answers 200 at every URL (a node's workers start after it listens)."""
    last: dict[str, str] = {}
    try:
        async with httpx.AsyncClient(timeout=5, trust_env=False) as probe:
            async with asyncio.timeout(timeout):
                for base_url in base_urls:
                    for _ in range(10_000):
                        try:
                            response = await probe.get(base_url + "/readyz")
                        except httpx.TransportError as error:
                            last[base_url] = repr(error)
                        else:
                            last[base_url] = f"{response.status_code} {response.text[:200]}"
                            if response.status_code == 200:
                                break
                        await asyncio.sleep(0.02)  # another process's state: nothing to await
    except TimeoutError:
        raise AssertionError(f"nodes not ready within {timeout} s: {last}") from None


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def _is_subreaper() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    flag = ctypes.c_int(0)
    if libc.prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_GET_CHILD_SUBREAPER) failed")
    return flag.value != 0


def _gone(pid: int) -> bool:
    """True once `pid` no longer runs (absent, or a zombie nobody reaped)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return True
    return fields[0] in ("Z", "X")


def _reap(pid: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            reaped, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not (or no longer) this process's child
            if _gone(pid):
                return
        else:
            if reaped == pid:
                return
        time.sleep(0.01)  # a SIGKILLed process exiting: nothing to await but it
    raise AssertionError(f"process {pid} survived SIGKILL for {_REAP_TIMEOUT_S} s")


@dataclass(frozen=True)
class KilledNode:
    base_url: str
    supervisor: int
    children: tuple[int, ...]


def wait_holding(node: RunningServer, within: float = 10.0) -> int:
    """The number of Bayeux connects the node's answering worker holds, once it holds at least
    one (probing `/readyz` for at most `within` seconds; 0 if it never did). Blocking: run it
    in a thread."""
    deadline = time.monotonic() + within
    with httpx.Client(timeout=2, trust_env=False) as probe:
        for _ in range(10_000):
            if time.monotonic() >= deadline:
                break
            try:
                held = int(probe.get(node.base_url + "/readyz").json().get("heldConnects", 0))
            except (httpx.TransportError, ValueError):
                held = 0
            if held > 0:
                return held
            time.sleep(0.01)  # another process's state: nothing to await but it
    return 0


def kill_node(node: RunningServer) -> KilledNode:
    """SIGKILL a node: its supervisor and every process under it; returns once all are reaped."""
    process: subprocess.Popen[str] = node.process
    if process.poll() is not None:
        raise AssertionError(f"the node at {node.base_url} had already exited")
    was_subreaper = _is_subreaper()
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    try:
        children = descendants(process.pid)
        process.send_signal(signal.SIGKILL)  # first, so no worker is replaced
        for child in children:
            with suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        process.wait(timeout=_REAP_TIMEOUT_S)
        # The supervisor is reaped, so its orphans have been handed to this process.
        deadline = time.monotonic() + _REAP_TIMEOUT_S
        for child in children:
            _reap(child, deadline)
    finally:
        if not was_subreaper:
            _prctl(_PR_SET_CHILD_SUBREAPER, 0)
    return KilledNode(node.base_url, process.pid, tuple(children))
