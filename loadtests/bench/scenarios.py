"""The measurements, each against any server that speaks the shapes given to it: publish
throughput, fan-out latency and loss over SSE and Bayeux, replay catch-up, idle memory."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from loadtests.bench.generator import Connection, Latencies, now_ms, open_event_stream
from loadtests.bench.servers import cpu_seconds, rss_kib

__all__ = [
    "Target",
    "fanout",
    "idle_memory",
    "publish_throughput",
    "replay_catch_up",
]

PublishRequest = Callable[[Connection, int], bytes]


@dataclass
class Target:
    """How to drive one server: the request that publishes event `n` on a connection, and how
    to subscribe over SSE or Bayeux (None where the server has no such transport)."""

    name: str
    base_url: str
    pid: int
    publish: PublishRequest
    sse_request: Callable[[Connection, int], bytes] | None = None  # (connection, from) -> GET
    bayeux: Callable[[], Awaitable[BayeuxSession]] | None = None
    notes: list[str] = field(default_factory=list)


class BayeuxSession:
    """One long-polling session: `connect()` returns the next reply's data messages."""

    async def connect(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


# `event_payload`'s own fields, found in whatever wraps them (an envelope, a Bayeux message),
# without decoding the rest: thousands of subscribers each receive every event.
_NUMBERS = re.compile(rb'"n":(\d+),"sentAt":([0-9.eE+-]+)')


def event_payload(n: int) -> bytes:
    return orjson.dumps({"n": n, "sentAt": now_ms(), "text": "x" * 100})


# -- publish throughput --------------------------------------------------------------------


async def publish_throughput(
    target: Target, connections: int = 32, seconds: float = 5.0, warm_up: float = 1.0
) -> dict[str, float]:
    """`connections` publishers as fast as the server answers; events/s and latency."""
    latencies = Latencies()
    counter = itertools.count()
    pool = [await Connection(target.base_url).open() for _ in range(connections)]
    measuring = False
    done = 0
    failures = 0

    async def publisher(connection: Connection, until: float) -> None:
        nonlocal done, failures
        while time.monotonic() < until:
            request = target.publish(connection, next(counter))
            started = time.perf_counter()
            response = await connection.send(request)
            if response.status >= 300:
                failures += 1
            elif measuring:
                latencies.add((time.perf_counter() - started) * 1000)
                done += 1

    try:
        warm_until = time.monotonic() + warm_up
        await asyncio.gather(*(publisher(c, warm_until) for c in pool))
        measuring = True
        cpu_before = cpu_seconds(target.pid)
        started = time.monotonic()
        await asyncio.gather(*(publisher(c, started + seconds) for c in pool))
        elapsed = time.monotonic() - started
        cpu_used = cpu_seconds(target.pid) - cpu_before
    finally:
        for connection in pool:
            connection.close()
    return {
        "events_per_s": round(done / elapsed),
        "failures": failures,
        "server_cpu_us_per_event": round(cpu_used * 1e6 / max(done, 1), 1),
        **latencies.summary(),
    }


# -- fan-out -------------------------------------------------------------------------------


@dataclass
class _Received:
    numbers: list[int] = field(default_factory=list)
    seen: set[int] = field(default_factory=set)  # kept as they come: the settle loop polls it

    def add(self, number: int) -> None:
        self.numbers.append(number)
        self.seen.add(number)


async def _paced_publishing(
    target: Target, rate: float, seconds: float, connections: int = 4
) -> int:
    """Publish `rate` events/s in total for `seconds`; returns how many were acknowledged.
    A server that cannot take the rate gets fewer events: publishing stops at `seconds`, so a
    saturated server's backlog (and the run) stays bounded."""
    total = int(rate * seconds)
    pool = [await Connection(target.base_url).open() for _ in range(connections)]
    acknowledged = 0
    started = time.monotonic()
    until = started + seconds

    async def publisher(index: int) -> None:
        nonlocal acknowledged
        connection = pool[index]
        for n in range(index, total, connections):
            delay = started + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif time.monotonic() >= until:
                return
            response = await connection.send(target.publish(connection, n))
            if response.status < 300:
                acknowledged += 1

    try:
        await asyncio.gather(*(publisher(i) for i in range(connections)))
    finally:
        for connection in pool:
            connection.close()
    return acknowledged


async def _sse_subscriber(
    target: Target, ready: asyncio.Event, received: _Received, latencies: Latencies
) -> None:
    assert target.sse_request is not None

    def on_frames(frames: bytes) -> None:
        arrived = now_ms()
        for found in _NUMBERS.finditer(frames):
            received.add(int(found[1]))
            latencies.add(arrived - float(found[2]))

    request = target.sse_request(Connection(target.base_url), -1)
    status, reader = await open_event_stream(target.base_url, request, on_frames)
    try:
        if status != 200:
            raise RuntimeError(f"{target.name}: SSE refused with {status}")
        ready.set()
        await reader.closed
    finally:
        reader.close()


async def _bayeux_subscriber(
    target: Target, ready: asyncio.Event, received: _Received, latencies: Latencies
) -> None:
    assert target.bayeux is not None
    session = await target.bayeux()
    ready.set()
    try:
        while True:
            for data in await session.connect():
                payload = data.get("payload", data)
                if isinstance(payload, dict) and "n" in payload:
                    received.add(int(payload["n"]))
                    latencies.add(now_ms() - float(payload["sentAt"]))
    finally:
        await session.close()


async def fanout(
    target: Target,
    transport: str,
    subscribers: int,
    rate: float,
    seconds: float = 10.0,
    settle: float = 5.0,
) -> dict[str, Any]:
    """`subscribers` on one channel, `rate` events/s published in total for `seconds`: delivery
    latency, events not delivered by the end of `settle` (lost, or still queued on a server
    that fell behind: the peers' README explains which) and duplicates."""
    run = _sse_subscriber if transport == "sse" else _bayeux_subscriber
    latencies = Latencies()
    received = [_Received() for _ in range(subscribers)]
    readiness = [asyncio.Event() for _ in range(subscribers)]
    tasks = []
    for index in range(subscribers):
        tasks.append(asyncio.create_task(run(target, readiness[index], received[index], latencies)))
        if index % 50 == 49:
            await asyncio.sleep(0)  # let connections open in waves rather than all at once
    try:
        async with asyncio.timeout(60):
            while not all(ready.is_set() for ready in readiness):
                failed = [task for task in tasks if task.done()]
                if failed:
                    failed[0].result()  # raises why a subscriber could not start
                await asyncio.sleep(0.05)  # polling many events and tasks at once
        cpu_before = cpu_seconds(target.pid)
        started = time.monotonic()
        published = await _paced_publishing(target, rate, seconds)
        publishing = time.monotonic() - started
        expected = published * subscribers
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline:
            if sum(len(r.seen) for r in received) >= expected:
                break
            await asyncio.sleep(0.05)  # waiting for stragglers, bounded by `settle`
        elapsed = time.monotonic() - started
        cpu_used = cpu_seconds(target.pid) - cpu_before
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    unique = sum(len(r.seen) for r in received)
    duplicates = sum(len(r.numbers) - len(r.seen) for r in received)
    return {
        "published": published,
        "published_per_s": round(published / max(publishing, 1e-9)),
        "delivered": unique,
        # Over the whole time until the last delivery (or the end of `settle`): what the
        # subscribers actually received per second, not what was asked of the server.
        "delivered_per_s": round(unique / max(elapsed, 1e-9)),
        "loss_pct": round(100 * (1 - unique / expected), 3) if expected else 0.0,
        "duplicates": duplicates,
        "server_cpu_us_per_delivery": round(cpu_used * 1e6 / max(unique, 1), 1),
        **latencies.summary(),
    }


# -- replay ----------------------------------------------------------------------------------


async def _publish_numbered(target: Target, events: int, connections: int = 16) -> None:
    """Publish events 0..`events`-1 as fast as the server takes them, every one acknowledged."""
    pool = [await Connection(target.base_url).open() for _ in range(connections)]

    async def publisher(index: int) -> None:
        connection = pool[index]
        for n in range(index, events, connections):
            response = await connection.send(target.publish(connection, n))
            if response.status >= 300:
                raise RuntimeError(f"{target.name}: publishing for replay failed: {response}")

    try:
        await asyncio.gather(*(publisher(i) for i in range(connections)))
    finally:
        for connection in pool:
            connection.close()


async def replay_catch_up(target: Target, events: int = 20_000) -> dict[str, Any]:
    """Publish `events` (retained), then time one new SSE subscriber reading them all from the
    oldest retained."""
    assert target.sse_request is not None
    await _publish_numbered(target, events)
    seen = 0
    all_seen = asyncio.get_running_loop().create_future()

    def on_frames(frames: bytes) -> None:
        nonlocal seen
        seen += len(_NUMBERS.findall(frames))
        if seen >= events and not all_seen.done():
            all_seen.set_result(None)

    started = time.monotonic()
    request = target.sse_request(Connection(target.base_url), -2)
    status, reader = await open_event_stream(target.base_url, request, on_frames)
    try:
        if status != 200:
            raise RuntimeError(f"{target.name}: replay refused with {status}")
        async with asyncio.timeout(120):
            await asyncio.wait([all_seen, reader.closed], return_when=asyncio.FIRST_COMPLETED)
    finally:
        reader.close()
    elapsed = time.monotonic() - started
    if seen < events:
        raise RuntimeError(f"{target.name}: the replay ended after {seen} of {events} events")
    return {"events": seen, "events_per_s": round(seen / elapsed), "seconds": round(elapsed, 3)}


# -- idle memory -----------------------------------------------------------------------------


async def _keep_polling(session: BayeuxSession) -> None:
    """An idle client: its connects are held by the server (none returns while nothing is
    published, except a first one that some servers answer at once)."""
    while True:
        await session.connect()


_IDLE_WAVE = 100  # connections opened at once: enough to be quick, few enough for any backlog


async def _idle_holder(target: Target, transport: str) -> list[Any]:
    """One idle SSE connection, or one Bayeux session and the task keeping it polling."""
    if transport == "sse":
        assert target.sse_request is not None
        connection = await Connection(target.base_url).open()
        status, _, _ = await connection.stream(target.sse_request(connection, -1))
        if status != 200:
            connection.close()
            raise RuntimeError(f"{target.name}: stream refused with {status}")
        return [connection]
    assert target.bayeux is not None
    session = await target.bayeux()
    return [session, asyncio.create_task(_keep_polling(session))]


async def idle_memory(
    target: Target, transport: str, counts: tuple[int, ...] = (1000, 5000)
) -> dict[str, Any]:
    """Server memory per idle SSE connection or Bayeux session (RSS growth / count)."""
    results: dict[str, Any] = {}
    for count in counts:
        before = rss_kib(target.pid)
        holders: list[Any] = []
        try:
            for wave in range(0, count, _IDLE_WAVE):
                size = min(_IDLE_WAVE, count - wave)
                opened = await asyncio.gather(
                    *(_idle_holder(target, transport) for _ in range(size))
                )
                for found in opened:
                    holders.extend(found)
            await asyncio.sleep(1.0)  # let the server's allocator settle before reading RSS
            after = rss_kib(target.pid)
        finally:
            for holder in holders:
                if isinstance(holder, Connection):
                    holder.close()
                elif isinstance(holder, asyncio.Task):
                    holder.cancel()
                else:
                    await holder.close()
        results[str(count)] = {
            "rss_growth_kib": after - before,
            "kib_each": round((after - before) / count, 2),
        }
    return results
