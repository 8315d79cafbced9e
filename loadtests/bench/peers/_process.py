"""What both peers need to run as measured processes: pinning to a core with `taskset`,
waiting for readiness, a loopback HTTP probe, and stopping by PID."""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from contextlib import suppress

__all__ = ["http_status", "stop", "taskset_prefix", "wait_until"]

_STOP_TIMEOUT_S = 15.0


def taskset_prefix(cpu: int | None) -> list[str]:
    """`taskset -c CPU` to put before a command, so the process and every thread and child it
    starts run on that core. Nothing when `cpu` is None or a core this process may not use
    (as `loadtests.bench.servers.pin` does, a one-core machine runs everything unpinned)."""
    if cpu is None or cpu not in os.sched_getaffinity(0):
        return []
    taskset = shutil.which("taskset")
    if taskset is None:
        raise RuntimeError("pinning a peer to a core needs taskset (Debian: util-linux)")
    return [taskset, "-c", str(cpu)]


def wait_until(
    ready: Callable[[], bool],
    process: subprocess.Popen[bytes],
    timeout_s: float,
    describe: Callable[[], str],
) -> None:
    """Poll `ready` until it holds; fail with `describe()` if the process exits or time runs
    out. Polling is right here: the readiness is another process's socket or log."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}:\n{describe()}")
        if ready():
            return
        time.sleep(0.05)
    raise RuntimeError(f"not ready within {timeout_s} s:\n{describe()}")


def http_status(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout_s: float = 2.0,
) -> tuple[int, bytes] | None:
    """One request to 127.0.0.1:`port`: its status and body, or None if it could not be made."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def stop(process: subprocess.Popen[bytes], also: Iterable[int] = ()) -> None:
    """SIGTERM to `process`; if it has not stopped after 15 s, SIGKILL to it and to the PIDs in
    `also` (its children, such as nginx's worker)."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        for pid in also:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait()
