"""Worker processes for one node: N spawned workers serving one listening socket.

SIGTERM or SIGINT is passed on to every worker (each drains: readiness fails, streams end with
a retry hint, held connects return) and the supervisor waits for them. A worker that dies
unexpectedly is replaced, at most once a second.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import threading
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from types import FrameType

__all__ = ["supervise"]

log = logging.getLogger("replaybus.supervisor")
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def supervise(
    workers: int, target: Callable[[list[socket.socket]], None], sock: socket.socket
) -> None:
    """Run `target([sock])` in `workers` spawned processes until told to stop."""
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
                    processes[index] = start()
    finally:
        for process in processes:
            if process.is_alive() and process.pid is not None:
                process.terminate()  # SIGTERM: the worker drains, then exits
        for process in processes:
            process.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
