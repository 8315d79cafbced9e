"""Worker processes for one node: N spawned workers serving one listening socket.

SIGTERM or SIGINT is passed on to every worker (each drains: readiness fails, streams end with
a retry hint, held connects return) and the supervisor waits for them. A worker that dies
unexpectedly is replaced, at most once a second.

Metrics: the workers write theirs to a shared folder (prometheus-client's multiprocess mode),
so any worker's /metrics answers for the whole node. The folder is `PROMETHEUS_MULTIPROC_DIR`
if set, else a temporary one made here and removed at exit.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import tempfile
import threading
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from types import FrameType

from app.metrics import MULTIPROCESS_DIR, forget_process

__all__ = ["supervise"]

log = logging.getLogger("replaybus.supervisor")
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def supervise(
    workers: int, target: Callable[[list[socket.socket]], None], sock: socket.socket
) -> None:
    """Run `target([sock])` in `workers` spawned processes until told to stop."""
    if os.environ.get(MULTIPROCESS_DIR):
        _supervise(workers, target, sock)
        return
    with tempfile.TemporaryDirectory(prefix="replaybus-metrics-") as folder:
        os.environ[MULTIPROCESS_DIR] = folder  # inherited by the workers spawned next
        try:
            _supervise(workers, target, sock)
        finally:
            del os.environ[MULTIPROCESS_DIR]


def _supervise(
    workers: int, target: Callable[[list[socket.socket]], None], sock: socket.socket
) -> None:
    context = multiprocessing.get_context("spawn")
    stopping = threading.Event()

    def start() -> BaseProcess:
        process = context.Process(target=target, args=([sock],))
        process.start()
        return process

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in _SIGNALS}
    processes = [start() for _ in range(workers)]
    try:
        while not stopping.wait(1.0):
            for index, process in enumerate(processes):
                if not process.is_alive() and not stopping.is_set():
                    log.error(
                        "worker %s exited with %s; starting another", process.pid, process.exitcode
                    )
                    if process.pid is not None:
                        forget_process(process.pid)  # its gauges no longer count
                    processes[index] = start()
    finally:
        for process in processes:
            if process.is_alive() and process.pid is not None:
                process.terminate()  # SIGTERM: the worker drains, then exits
        for process in processes:
            process.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
