"""The measurements, each against any server described by a `Target`: publish throughput,
fan-out latency and loss over SSE and Bayeux, replay catch-up, idle memory. The compiled
generator (loadtests/gen) does the load; each result carries its `generator_cpu`."""

from __future__ import annotations

import time
from typing import Any

from loadtests.bench import gen
from loadtests.bench.servers import rss_kib
from loadtests.bench.targets import Target

__all__ = ["fanout", "idle_memory", "publish_throughput", "replay_catch_up"]

_SETTLE_RSS_S = 1.0  # the server's allocator settles before its RSS is read


def publish_throughput(
    target: Target, connections: int = 32, seconds: float = 5.0, warm_up: float = 1.0
) -> dict[str, Any]:
    """`connections` publishers as fast as the server answers: events/s, latency, failures,
    the server's CPU per event."""
    spec = {**target.spec(), "connections": connections, "seconds": seconds}
    return gen.run("publish", {**spec, "warm_up_s": warm_up})


def fanout(
    target: Target,
    transport: str,
    subscribers: int,
    rate: float,
    seconds: float = 10.0,
    settle: float = 5.0,
) -> dict[str, Any]:
    """`subscribers` on one channel, `rate` events/s published in total for `seconds`: delivery
    latency, events not delivered by the end of `settle` (lost, or still queued on a server
    that fell behind: the peers' README explains which), duplicates and the server's CPU per
    delivery. Publishing stops after `seconds` whatever the server took."""
    spec = {**target.spec(), "subscribers": subscribers, "rate": rate, "seconds": seconds}
    spec["settle_s"] = settle
    if transport == "sse":
        assert target.sse is not None
        return gen.run("fanout-sse", {**spec, "sse_request": target.sse(-1)})
    assert target.bayeux is not None
    return gen.run("fanout-bayeux", {**spec, "bayeux": target.bayeux})


def replay_catch_up(target: Target, events: int = 20_000) -> dict[str, Any]:
    """Publish `events` (retained, every one acknowledged), then time one new SSE subscriber
    reading them all from the oldest retained."""
    assert target.sse is not None
    return gen.run("replay", {**target.spec(), "events": events, "replay_request": target.sse(-2)})


def idle_memory(
    target: Target, transport: str, counts: tuple[int, ...] = (1000, 5000)
) -> dict[str, Any]:
    """Server memory per idle SSE connection or Bayeux session (RSS growth / count)."""
    results: dict[str, Any] = {}
    for count in counts:
        spec = {**target.spec(), "count": count, "transport": transport}
        if transport == "sse":
            assert target.sse is not None
            spec["sse_request"] = target.sse(-1)
        else:
            assert target.bayeux is not None
            spec["bayeux"] = target.bayeux
        before = rss_kib(target.pids[0])
        with gen.holding(spec):
            time.sleep(_SETTLE_RSS_S)
            after = rss_kib(target.pids[0])
        results[str(count)] = {
            "rss_growth_kib": after - before,
            "kib_each": round((after - before) / count, 2),
        }
    return results
