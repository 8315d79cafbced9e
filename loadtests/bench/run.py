"""`make bench`: replaybus (memory and Redis engines) measured with one load generator, in one
run, next to a bare Starlette endpoint and the generator's own ceiling. Servers and their Redis
run on core 0, the generator on core 1. Prints a markdown table and writes JSON.

    python -m loadtests.bench.run [--quick] [--json bench-results/latest.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop

from loadtests.bench import scenarios
from loadtests.bench.servers import (
    pin,
    running_bare_starlette,
    running_ceiling,
    running_replaybus,
)
from loadtests.bench.targets import publish_only, replaybus_target
from tests.harness.redis import running_redis

SERVER_CPU = 0
GENERATOR_CPU = 1
GENERATOR = (
    "raw HTTP/1.1 on asyncio streams with uvloop, one process on its own core (why: httpx's "
    "pool is quadratic in connections; this one writes prepared bytes and reads what is announced)"
)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def _median_of(
    runs: int, measure: Callable[[], Awaitable[dict[str, Any]]], key: str
) -> dict[str, Any]:
    results = [await measure() for _ in range(runs)]
    middle = statistics.median_low([r[key] for r in results])
    chosen = next(r for r in results if r[key] == middle)
    return {**chosen, "runs": [r[key] for r in results]}


async def _bench(quick: bool) -> dict[str, Any]:
    runs = 1 if quick else 3
    seconds = 2.0 if quick else 5.0
    fanout_seconds = 3.0 if quick else 8.0
    sizes = (100,) if quick else (100, 1000)
    rates = (100.0,) if quick else (100.0, 1000.0)
    idle_counts = (200,) if quick else (1000, 5000)
    replay_events = 2000 if quick else 20_000
    results: dict[str, Any] = {}

    async def publish(target: scenarios.Target) -> dict[str, Any]:
        return await _median_of(
            runs, lambda: scenarios.publish_throughput(target, seconds=seconds), "events_per_s"
        )

    _say("generator ceiling ...")
    with running_ceiling(SERVER_CPU) as server:
        results["ceiling"] = {"publish": await publish(publish_only(server, "/event/Bench__e"))}
    _say("bare Starlette ...")
    with running_bare_starlette(SERVER_CPU) as server:
        results["bare"] = {"publish": await publish(publish_only(server, "/event/Bench__e"))}

    with running_redis() as redis:
        pin(redis.process.pid, SERVER_CPU)
        for name, redis_url in (("memory", None), ("redis", redis.url)):
            extra = {"REPLAYBUS_BAYEUX_MAX_CLIENTS": "20000"}
            with running_replaybus(SERVER_CPU, redis_url, extra) as server:
                entry: dict[str, Any] = {}
                _say(f"replaybus ({name}): publish ...")
                entry["publish"] = await publish(replaybus_target(server, "/event/Publish__e"))
                _say(f"replaybus ({name}): replay ...")
                entry["replay"] = await scenarios.replay_catch_up(
                    replaybus_target(server, "/event/Replay__e"), replay_events
                )
                fan: dict[str, Any] = {}
                for transport in ("sse", "bayeux"):
                    for size in sizes:
                        for rate in rates:
                            label = f"{transport} {size} subs @ {rate:g}/s"
                            _say(f"replaybus ({name}): fan-out {label} ...")
                            channel = f"/event/Fan_{transport}_{size}_{int(rate)}__e"
                            fan[label] = await scenarios.fanout(
                                replaybus_target(server, channel),
                                transport,
                                size,
                                rate,
                                seconds=fanout_seconds,
                            )
                entry["fanout"] = fan
                idle: dict[str, Any] = {}
                for transport in ("sse", "bayeux"):
                    _say(f"replaybus ({name}): idle {transport} ...")
                    idle[transport] = await scenarios.idle_memory(
                        replaybus_target(server, f"/event/Idle_{transport}__e"),
                        transport,
                        idle_counts,
                    )
                entry["idle"] = idle
                results[f"replaybus_{name}"] = entry
    return results


def _ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}x" if reference else "-"


def _table(results: dict[str, Any]) -> str:
    ceiling = results["ceiling"]["publish"]["events_per_s"]
    bare = results["bare"]["publish"]
    lines = [
        "| Measurement | replaybus (memory) | replaybus + Redis | reference |",
        "|---|---|---|---|",
    ]
    memory, redis = results["replaybus_memory"], results["replaybus_redis"]

    def publish_cell(entry: dict[str, Any]) -> str:
        p = entry["publish"]
        return (
            f"{p['events_per_s']:,} ev/s (p50 {p['p50_ms']} ms, p99 {p['p99_ms']} ms; "
            f"{_ratio(p['events_per_s'], bare['events_per_s'])} bare)"
        )

    lines.append(
        f"| Publish, 32 connections | {publish_cell(memory)} | {publish_cell(redis)} | "
        f"bare Starlette {bare['events_per_s']:,} ev/s; generator ceiling {ceiling:,} ev/s |"
    )
    for label in memory["fanout"]:
        cells = []
        for entry in (memory, redis):
            f = entry["fanout"][label]
            cells.append(
                f"p50 {f['p50_ms']} / p99 {f['p99_ms']} / max {f['max_ms']} ms; "
                f"{f['delivered_per_s']:,} msg/s; loss {f['loss_pct']} %; dup {f['duplicates']}"
            )
        lines.append(f"| Fan-out {label} | {cells[0]} | {cells[1]} | |")
    lines.append(
        f"| Replay catch-up from -2 ({memory['replay']['events']:,} events) | "
        f"{memory['replay']['events_per_s']:,} ev/s | {redis['replay']['events_per_s']:,} ev/s | |"
    )
    for transport in ("sse", "bayeux"):
        for count in memory["idle"][transport]:
            lines.append(
                f"| Idle {transport}, {count} | "
                f"{memory['idle'][transport][count]['kib_each']} KiB each | "
                f"{redis['idle'][transport][count]['kib_each']} KiB each | |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (checks the harness)")
    parser.add_argument(
        "--json", default="bench-results/latest.json", help="where to write the results"
    )
    arguments = parser.parse_args(argv)
    if (os.cpu_count() or 1) > GENERATOR_CPU:
        os.sched_setaffinity(0, {GENERATOR_CPU})
    started = time.monotonic()
    results = uvloop.run(_bench(arguments.quick))
    document = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "generator": GENERATOR,
        "seconds": round(time.monotonic() - started, 1),
        "results": results,
    }
    Path(arguments.json).parent.mkdir(parents=True, exist_ok=True)
    Path(arguments.json).write_text(json.dumps(document, indent=2) + "\n")
    print(f"replaybus benchmark, {document['date']}, {document['machine']}")
    print()
    print(_table(results))
    print()
    print(f"Generator: {GENERATOR}. Whole run: {document['seconds']} s. JSON: {arguments.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
