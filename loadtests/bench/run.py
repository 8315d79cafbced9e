"""`make bench`: replaybus (memory and Redis engines) measured with one load generator, in one
run, next to its peers (Nchan+Redis over SSE, Faye+Redis over Bayeux), a bare Starlette endpoint
and the generator's own ceiling. Servers and their Redis run on core 0, the generator on core 1.
Prints a markdown table and the targets met or missed, and writes JSON.

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
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop

from loadtests.bench import scenarios
from loadtests.bench.peers import running_faye, running_nchan
from loadtests.bench.servers import (
    pin,
    running_bare_starlette,
    running_ceiling,
    running_replaybus,
)
from loadtests.bench.targets import (
    faye_target,
    nchan_target,
    publish_and_stream,
    publish_only,
    replaybus_target,
)
from tests.harness.redis import running_redis

SERVER_CPU = 0
GENERATOR_CPU = 1
GENERATOR = (
    "raw HTTP/1.1 on asyncio streams with uvloop, one process on its own core (why: httpx's "
    "pool is quadratic in connections; this one writes prepared bytes and reads what is announced)"
)


_STARTED = time.monotonic()


def _say(text: str) -> None:
    """Progress on stderr, with the time since the run started."""
    minutes, seconds = divmod(int(time.monotonic() - _STARTED), 60)
    print(f"[{minutes:02d}:{seconds:02d}] {text}", file=sys.stderr, flush=True)


async def _median_of(
    runs: int, measure: Callable[[], Awaitable[dict[str, Any]]], key: str
) -> dict[str, Any]:
    results = [await measure() for _ in range(runs)]
    middle = statistics.median_low([r[key] for r in results])
    chosen = next(r for r in results if r[key] == middle)
    return {**chosen, "runs": [r[key] for r in results]}


async def _bench(quick: bool) -> dict[str, Any]:
    runs = 1 if quick else 3
    seconds = 2.0 if quick else 3.0
    fanout_seconds = 3.0 if quick else 4.0
    sizes = (100,) if quick else (100, 1000)
    rates = (100.0,) if quick else (100.0, 1000.0)
    idle_counts = (200,) if quick else (1000, 5000)
    replay_events = 2000 if quick else 20_000
    results: dict[str, Any] = {}

    async def publish(target: scenarios.Target) -> dict[str, Any]:
        _say(f"{target.name}: publish ...")
        return await _median_of(
            runs, lambda: scenarios.publish_throughput(target, seconds=seconds), "events_per_s"
        )

    async def fanouts(make: Callable[[str], scenarios.Target], transport: str) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for size in sizes:
            for rate in rates:
                label = f"{transport} {size} subs @ {rate:g}/s"
                target = make(f"/event/Fan_{transport}_{size}_{int(rate)}__e")
                _say(f"{target.name}: fan-out {label} ...")
                found[label] = await scenarios.fanout(
                    target, transport, size, rate, seconds=fanout_seconds
                )
        return found

    async def idle(
        fresh: Callable[[], AbstractContextManager[Callable[[str], scenarios.Target]]],
        transport: str,
    ) -> dict[str, Any]:
        """Each count on a server of its own that has done nothing else, so the growth of its
        memory is the connections' alone."""
        found: dict[str, Any] = {}
        for count in idle_counts:
            with fresh() as make:
                target = make(f"/event/Idle_{transport}__e")
                _say(f"{target.name}: idle {transport} x {count} ...")
                found.update(await scenarios.idle_memory(target, transport, (count,)))
        return found

    with running_ceiling(SERVER_CPU) as server:
        results["ceiling"] = {
            "publish": await publish(publish_only(server, "/event/B__e")),
            "fanout": await fanouts(lambda channel: publish_and_stream(server, channel), "sse"),
        }
    with running_bare_starlette(SERVER_CPU) as server:
        results["bare"] = {"publish": await publish(publish_only(server, "/event/B__e"))}

    @contextmanager
    def fresh_bare() -> Iterator[Callable[[str], scenarios.Target]]:
        with running_bare_starlette(SERVER_CPU) as server:
            yield lambda channel: publish_and_stream(server, channel)

    results["bare"]["idle"] = {"sse": await idle(fresh_bare, "sse")}

    with running_redis() as redis:
        pin(redis.process.pid, SERVER_CPU)
        extra = {"REPLAYBUS_BAYEUX_MAX_CLIENTS": "20000"}
        with running_replaybus(SERVER_CPU, None, extra) as server:
            results["replaybus_memory"] = {
                "publish": await publish(replaybus_target(server, "/event/Publish__e")),
                "replay": await scenarios.replay_catch_up(
                    replaybus_target(server, "/event/Replay__e"), replay_events
                ),
            }
        with running_replaybus(SERVER_CPU, redis.url, extra) as server:

            def make(channel: str) -> scenarios.Target:
                return replaybus_target(server, channel)

            results["replaybus_redis"] = {
                "publish": await publish(make("/event/Publish__e")),
                "replay": await scenarios.replay_catch_up(make("/event/Replay__e"), replay_events),
                "fanout": {**await fanouts(make, "sse"), **await fanouts(make, "bayeux")},
            }

        @contextmanager
        def fresh_replaybus() -> Iterator[Callable[[str], scenarios.Target]]:
            with running_replaybus(SERVER_CPU, redis.url, extra) as server:
                yield lambda channel: replaybus_target(server, channel)

        results["replaybus_redis"]["idle"] = {
            "sse": await idle(fresh_replaybus, "sse"),
            "bayeux": await idle(fresh_replaybus, "bayeux"),
        }
        with running_nchan(redis.url, SERVER_CPU) as nchan:

            def make_nchan(channel: str) -> scenarios.Target:
                return nchan_target(nchan, channel)

            results["nchan"] = {
                "version": nchan.version,
                "publish": await publish(make_nchan("/event/Publish__e")),
                "replay": await scenarios.replay_catch_up(
                    make_nchan("/event/Replay__e"), replay_events
                ),
                "fanout": await fanouts(make_nchan, "sse"),
            }

        @contextmanager
        def fresh_nchan() -> Iterator[Callable[[str], scenarios.Target]]:
            with running_nchan(redis.url, SERVER_CPU) as peer:
                yield lambda channel: nchan_target(peer, channel)

        results["nchan"]["idle"] = {"sse": await idle(fresh_nchan, "sse")}
        with running_faye(redis.url, SERVER_CPU) as faye:

            def make_faye(channel: str) -> scenarios.Target:
                return faye_target(faye, channel)

            results["faye"] = {
                "versions": faye.versions,
                "publish": await publish(make_faye("/event/Publish__e")),
                "fanout": await fanouts(make_faye, "bayeux"),
            }

        @contextmanager
        def fresh_faye() -> Iterator[Callable[[str], scenarios.Target]]:
            with running_faye(redis.url, SERVER_CPU) as peer:
                yield lambda channel: faye_target(peer, channel)

        results["faye"]["idle"] = {"bayeux": await idle(fresh_faye, "bayeux")}
    return results


def _ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}x" if reference else "-"


def _fan_cell(f: dict[str, Any]) -> str:
    return (
        f"p50 {f['p50_ms']} / p99 {f['p99_ms']} ms; {f['delivered_per_s']:,} msg/s "
        f"({f['published_per_s']:,} ev/s taken); loss {f['loss_pct']} %; dup {f['duplicates']}"
    )


def _table(results: dict[str, Any]) -> str:
    memory, redis = results["replaybus_memory"], results["replaybus_redis"]
    nchan, faye = results["nchan"], results["faye"]
    bare, ceiling = results["bare"]["publish"], results["ceiling"]["publish"]
    lines = [
        "| Measurement | replaybus | peer | replaybus / peer |",
        "|---|---|---|---|",
    ]

    def publish_cell(p: dict[str, Any]) -> str:
        return f"{p['events_per_s']:,} ev/s (p50 {p['p50_ms']}, p99 {p['p99_ms']} ms)"

    rp = redis["publish"]
    lines.append(
        f"| Publish, 32 connections (Redis) | {publish_cell(rp)} | "
        f"Faye+Redis {publish_cell(faye['publish'])} | "
        f"{_ratio(rp['events_per_s'], faye['publish']['events_per_s'])} |"
    )
    lines.append(
        f"| Publish (Redis) vs Nchan+Redis | {rp['events_per_s']:,} ev/s | "
        f"Nchan+Redis {publish_cell(nchan['publish'])} | "
        f"{_ratio(rp['events_per_s'], nchan['publish']['events_per_s'])} |"
    )
    lines.append(
        f"| Publish (Redis) vs bare Starlette | {rp['events_per_s']:,} ev/s | "
        f"bare {publish_cell(bare)} | {_ratio(rp['events_per_s'], bare['events_per_s'])} |"
    )
    lines.append(f"| Publish, memory engine | {publish_cell(memory['publish'])} | | |")
    for label, found in redis["fanout"].items():
        peer = nchan["fanout"].get(label) or faye["fanout"].get(label)
        name = "Nchan+Redis" if label in nchan["fanout"] else "Faye+Redis"
        ratio = _ratio(found["delivered_per_s"], peer["delivered_per_s"]) if peer else "-"
        peer_cell = f"{name} {_fan_cell(peer)}" if peer else "-"
        lines.append(f"| Fan-out {label} | {_fan_cell(found)} | {peer_cell} | {ratio} delivered |")
    rr, nr = redis["replay"], nchan["replay"]
    lines.append(
        f"| Replay {rr['events']:,} from -2 (Redis) | {rr['events_per_s']:,} ev/s "
        f"(memory engine {memory['replay']['events_per_s']:,}) | Nchan+Redis "
        f"{nr['events_per_s']:,} ev/s | {_ratio(rr['events_per_s'], nr['events_per_s'])} |"
    )
    for count, found in results["bare"].get("idle", {}).get("sse", {}).items():
        lines.append(
            f"| Idle sse, {count}: the stack's floor (a bare Starlette StreamingResponse) | "
            f"{found['kib_each']} KiB each | | |"
        )
    for transport, peer, name in (("sse", nchan, "Nchan"), ("bayeux", faye, "Faye")):
        for count, found in redis["idle"][transport].items():
            other = peer["idle"][transport][count]
            lines.append(
                f"| Idle {transport}, {count} | {found['kib_each']} KiB each | "
                f"{name} {other['kib_each']} KiB each | "
                f"{_ratio(found['kib_each'], other['kib_each'])} |"
            )
    lines.append(
        f"| Generator ceiling (do-nothing server) | {ceiling['events_per_s']:,} ev/s | | |"
    )
    for label, found in results["ceiling"].get("fanout", {}).items():
        lines.append(f"| Generator ceiling, fan-out {label} | {_fan_cell(found)} | | |")
    return "\n".join(lines)


def _targets(results: dict[str, Any]) -> list[str]:
    redis, nchan, faye = results["replaybus_redis"], results["nchan"], results["faye"]
    bare = results["bare"]["publish"]["events_per_s"]
    rp = redis["publish"]["events_per_s"]
    checks: list[tuple[str, bool, str]] = [
        (
            "publish >= 1.0x Faye+Redis",
            rp >= faye["publish"]["events_per_s"],
            _ratio(rp, faye["publish"]["events_per_s"]),
        ),
        ("publish >= 0.65x bare Starlette", rp >= 0.65 * bare, _ratio(rp, bare)),
    ]
    fan = redis["fanout"]
    for transport, bound in (("sse", 10.0), ("bayeux", 25.0)):
        label = f"{transport} 100 subs @ 100/s"
        if label in fan:
            found = fan[label]
            met = found["loss_pct"] == 0 and found["p99_ms"] <= bound
            checks.append(
                (
                    f"{label}: zero loss, p99 <= {bound:g} ms",
                    met,
                    f"loss {found['loss_pct']} %, p99 {found['p99_ms']} ms",
                )
            )
    label = "sse 1000 subs @ 100/s"
    if label in fan and label in nchan["fanout"]:
        found, peer = fan[label], nchan["fanout"][label]
        met = (
            found["loss_pct"] == 0
            and found["delivered_per_s"] >= 0.5 * peer["delivered_per_s"]
            and found["p99_ms"] <= peer["p99_ms"]
        )
        checks.append(
            (
                f"{label}: zero loss, >= 0.5x Nchan delivered, p99 <= Nchan's",
                met,
                f"{_ratio(found['delivered_per_s'], peer['delivered_per_s'])} delivered, "
                f"p99 {found['p99_ms']} vs {peer['p99_ms']} ms, loss {found['loss_pct']} %",
            )
        )
    rr, nr = redis["replay"]["events_per_s"], nchan["replay"]["events_per_s"]
    checks.append(("replay >= 3x Nchan+Redis", rr >= 3 * nr, _ratio(rr, nr)))
    for transport in ("sse", "bayeux"):
        largest = max(redis["idle"][transport], key=int)
        kib = redis["idle"][transport][largest]["kib_each"]
        checks.append((f"idle {transport} at {largest} <= 16 KiB each", kib <= 16, f"{kib} KiB"))
    return [f"- {'met' if met else 'MISSED'}: {name} ({figure})" for name, met, figure in checks]


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
    print("Targets:")
    print("\n".join(_targets(results)))
    print()
    print(
        "Fan-out: publishing stops after the phase's seconds whatever the server took (ev/s "
        "taken); loss is what some subscriber had not received 5 s later (lost, or still queued "
        "on a server that fell behind)."
    )
    print(f"Generator: {GENERATOR}. Whole run: {document['seconds']} s. JSON: {arguments.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
