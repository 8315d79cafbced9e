"""Measure what anonymous token requests cost a node: start `replaybus serve` (embedded
defaults), send N concurrent `GET /healthz`, then N concurrent token requests naming unknown
client ids, then N concurrent `GET /healthz` twice more, and report each burst's wall time and
status codes and the node's peak resident memory (VmHWM). Run from the repository root.

    .venv/bin/python scripts/measure_token_endpoint.py [--requests 100]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.server import run_server


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/<pid>/status (Linux only)")


async def _burst(
    client: httpx.AsyncClient, count: int, request: str
) -> tuple[float, collections.Counter[int]]:
    async def one() -> int:
        if request == "healthz":
            return (await client.get("/healthz")).status_code
        form = {
            "grant_type": "client_credentials",
            "client_id": f"unknown-{uuid.uuid4().hex}",
            "client_secret": "guess",
        }
        return (await client.post("/services/oauth2/token", data=form)).status_code

    started = time.perf_counter()
    statuses = await asyncio.gather(*(one() for _ in range(count)))
    return time.perf_counter() - started, collections.Counter(statuses)


async def measure(base_url: str, count: int) -> list[tuple[str, float, collections.Counter[int]]]:
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=120) as client:
        await client.get("/healthz")  # warm up
        results = []
        for request in ("healthz", "token", "healthz", "healthz"):
            elapsed, statuses = await _burst(client, count, request)
            results.append((request, elapsed, statuses))
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=100)
    arguments = parser.parse_args()
    with run_server() as server:
        idle = _peak_rss_mib(server.process.pid)
        results = asyncio.run(measure(server.base_url, arguments.requests))
        peak = _peak_rss_mib(server.process.pid)
    for request, elapsed, statuses in results:
        label = "token requests (unknown clients)" if request == "token" else "GET /healthz"
        shown = ", ".join(f"{status} x{count}" for status, count in sorted(statuses.items()))
        print(f"{arguments.requests} {label}: {elapsed:.3f} s ({shown})")
    print(f"node peak RSS: {peak:.0f} MiB (after start-up: {idle:.0f} MiB)")


if __name__ == "__main__":
    main()
