"""`make bench`: replaybus (memory and Redis engines, one and two workers) measured with one
compiled load generator (loadtests/gen), in one run, next to its peers (Nchan+Redis over SSE,
Faye+Redis over Bayeux), bare Starlette (a JSON POST, a StreamingResponse, sse-starlette's
EventSourceResponse) and the generator's own ceiling against its do-nothing server. Servers and
their Redis run on core 0, the generator on core 1; a row whose generator used more than 0.8 of
its core says so. Prints a markdown table and the targets met or missed, and writes JSON.

    python -m loadtests.bench.run [--quick] [--json bench-results/latest.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadtests.bench import gen, scenarios
from loadtests.bench.peers import running_faye, running_nchan
from loadtests.bench.servers import (
    Server,
    pin,
    running_bare_starlette,
    running_ceiling,
    running_fanout_app,
    running_replaybus,
)
from loadtests.bench.targets import (
    Target,
    faye_target,
    nchan_target,
    publish_and_stream,
    publish_only,
    replaybus_target,
)
from tests.harness.redis import running_redis

SERVER_CPU = 0
GENERATOR = (
    "compiled (Go, loadtests/gen): prepared HTTP/1.1 requests on keep-alive connections, SSE "
    "streams read by one epoll thread, pinned to its own core; its CPU share is in every row"
)

_STARTED = time.monotonic()


def _say(text: str) -> None:
    """Progress on stderr, with the time since the run started."""
    minutes, seconds = divmod(int(time.monotonic() - _STARTED), 60)
    print(f"[{minutes:02d}:{seconds:02d}] {text}", file=sys.stderr, flush=True)


def _median_of(runs: int, measure: Callable[[], dict[str, Any]], key: str) -> dict[str, Any]:
    results = [measure() for _ in range(runs)]
    middle = statistics.median_low([r[key] for r in results])
    chosen = next(r for r in results if r[key] == middle)
    return {**chosen, "runs": [r[key] for r in results]}


class _Plan:
    """The sizes of one run (`--quick`: tiny ones, to check the harness end to end)."""

    def __init__(self, quick: bool) -> None:
        self.runs = 1 if quick else 3
        self.seconds = 2.0 if quick else 3.0
        self.fanout_seconds = 3.0 if quick else 4.0
        self.sizes = (100,) if quick else (100, 1000)
        self.rates = (100.0,) if quick else (100.0, 1000.0)
        self.idle_counts = (200,) if quick else (1000, 5000)
        self.replay_events = 2000 if quick else 20_000
        # The multi-core comparison: SSE fan-out at the size (smaller when quick).
        self.workers_fanout = (100, 100.0) if quick else (1000, 100.0)

    def publish(self, target: Target) -> dict[str, Any]:
        _say(f"{target.name}: publish ...")
        return _median_of(
            self.runs,
            lambda: scenarios.publish_throughput(target, seconds=self.seconds),
            "events_per_s",
        )

    def fanouts(
        self,
        make: Callable[[str], Target],
        transport: str,
        sizes: tuple[tuple[int, float], ...] | None = None,
    ) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for size, rate in sizes or tuple((s, r) for s in self.sizes for r in self.rates):
            label = f"{transport} {size} subs @ {rate:g}/s"
            target = make(f"/event/Fan_{transport}_{size}_{int(rate)}__e")
            _say(f"{target.name}: fan-out {label} ...")
            found[label] = scenarios.fanout(
                target, transport, size, rate, seconds=self.fanout_seconds
            )
        return found

    def idle(
        self, fresh: Callable[[], AbstractContextManager[Callable[[str], Target]]], transport: str
    ) -> dict[str, Any]:
        """Each count on a server of its own that has done nothing else, so the growth of its
        memory is the connections' alone."""
        found: dict[str, Any] = {}
        for count in self.idle_counts:
            with fresh() as make:
                target = make(f"/event/Idle_{transport}__e")
                _say(f"{target.name}: idle {transport} x {count} ...")
                found.update(scenarios.idle_memory(target, transport, (count,)))
        return found


def _stream_maker(server: Server, path: str) -> Callable[[str], Target]:
    def make(channel: str) -> Target:
        target = publish_and_stream(server, channel, path)
        target.name = f"{server.name} {path}"
        return target

    return make


def _bench(quick: bool) -> dict[str, Any]:
    plan = _Plan(quick)
    results: dict[str, Any] = {}
    with running_ceiling(SERVER_CPU) as server:
        results["ceiling"] = {
            "publish": plan.publish(publish_only(server, "/event/B__e")),
            "fanout": plan.fanouts(lambda channel: publish_and_stream(server, channel), "sse"),
        }
    with running_bare_starlette(SERVER_CPU) as server:
        results["bare"] = {"publish": plan.publish(publish_only(server, "/event/B__e"))}

    @contextmanager
    def fresh_bare() -> Iterator[Callable[[str], Target]]:
        with running_bare_starlette(SERVER_CPU) as server:
            yield lambda channel: publish_and_stream(server, channel)

    results["bare"]["idle"] = {"sse": plan.idle(fresh_bare, "sse")}
    results["starlette_fanout"] = {}
    for path in ("/stream", "/sse-starlette"):
        with running_fanout_app(SERVER_CPU) as server:
            found = plan.fanouts(_stream_maker(server, path), "sse", ((plan.sizes[-1], 100.0),))

        @contextmanager
        def fresh_app(path: str = path) -> Iterator[Callable[[str], Target]]:
            with running_fanout_app(SERVER_CPU) as server:
                yield _stream_maker(server, path)

        results["starlette_fanout"][path] = {"fanout": found, "idle": plan.idle(fresh_app, "sse")}

    with running_redis() as redis:
        pin(redis.process.pid, SERVER_CPU)
        extra = {"REPLAYBUS_BAYEUX_MAX_CLIENTS": "20000"}
        with running_replaybus(SERVER_CPU, None, extra) as server:
            publish = plan.publish(replaybus_target(server, "/event/Publish__e"))
            _say(f"{server.name}: replay ...")
            results["replaybus_memory"] = {
                "publish": publish,
                "replay": scenarios.replay_catch_up(
                    replaybus_target(server, "/event/Replay__e"), plan.replay_events
                ),
            }
        with running_replaybus(SERVER_CPU, redis.url, extra) as server:

            def make(channel: str) -> Target:
                return replaybus_target(server, channel)

            publish = plan.publish(make("/event/Publish__e"))
            _say(f"{server.name}: replay ...")
            results["replaybus_redis"] = {
                "publish": publish,
                "replay": scenarios.replay_catch_up(make("/event/Replay__e"), plan.replay_events),
                "fanout": {**plan.fanouts(make, "sse"), **plan.fanouts(make, "bayeux")},
            }

        @contextmanager
        def fresh_replaybus() -> Iterator[Callable[[str], Target]]:
            with running_replaybus(SERVER_CPU, redis.url, extra) as server:
                yield lambda channel: replaybus_target(server, channel)

        results["replaybus_redis"]["idle"] = {
            "sse": plan.idle(fresh_replaybus, "sse"),
            "bayeux": plan.idle(fresh_replaybus, "bayeux"),
        }
        results["workers"] = _workers(plan, redis.url, redis.process.pid, extra)
        pin(redis.process.pid, SERVER_CPU)
        with running_nchan(redis.url, SERVER_CPU) as nchan:

            def make_nchan(channel: str) -> Target:
                return nchan_target(nchan, channel)

            publish = plan.publish(make_nchan("/event/Publish__e"))
            _say("Nchan+Redis: replay ...")
            results["nchan"] = {
                "version": nchan.version,
                "publish": publish,
                "replay": scenarios.replay_catch_up(
                    make_nchan("/event/Replay__e"), plan.replay_events
                ),
                "fanout": plan.fanouts(make_nchan, "sse"),
            }

        @contextmanager
        def fresh_nchan() -> Iterator[Callable[[str], Target]]:
            with running_nchan(redis.url, SERVER_CPU) as peer:
                yield lambda channel: nchan_target(peer, channel)

        results["nchan"]["idle"] = {"sse": plan.idle(fresh_nchan, "sse")}
        with running_faye(redis.url, SERVER_CPU) as faye:

            def make_faye(channel: str) -> Target:
                return faye_target(faye, channel)

            results["faye"] = {
                "versions": faye.versions,
                "publish": plan.publish(make_faye("/event/Publish__e")),
                "fanout": plan.fanouts(make_faye, "bayeux"),
            }

        @contextmanager
        def fresh_faye() -> Iterator[Callable[[str], Target]]:
            with running_faye(redis.url, SERVER_CPU) as peer:
                yield lambda channel: faye_target(peer, channel)

        results["faye"]["idle"] = {"bayeux": plan.idle(fresh_faye, "bayeux")}
    return results


def _workers(plan: _Plan, redis_url: str, redis_pid: int, extra: dict[str, str]) -> dict[str, Any]:
    """replaybus on Redis with one and with two worker processes, each measured the same way:
    with two cores there is no third for the generator, so Redis and the server processes run
    unpinned on both cores, sharing core 1 with the generator. CPU is summed over the workers."""
    cores = ",".join(str(cpu) for cpu in sorted(os.sched_getaffinity(0)))
    subprocess.run(["taskset", "-a", "-cp", cores, str(redis_pid)], check=True, capture_output=True)
    found: dict[str, Any] = {}
    for workers in (1, 2):
        with running_replaybus(None, redis_url, extra, workers) as server:

            def make(channel: str, workers: int = workers) -> Target:
                target = replaybus_target(server, channel.replace("/event/", f"/event/W{workers}"))
                target.name = f"replaybus+redis, {workers} worker{'s' if workers > 1 else ''}"
                return target

            found[str(workers)] = {
                "publish": plan.publish(make("/event/Publish__e")),
                "fanout": plan.fanouts(make, "sse", (plan.workers_fanout,)),
            }
    return found


def _ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}x" if reference else "-"


def _at_most(value: float | None, bound: float | None) -> bool:
    """`value <= bound`, false when either is missing (no latency without a delivery)."""
    return value is not None and bound is not None and value <= bound


def _bound(found: dict[str, Any]) -> bool:
    return float(found.get("generator_cpu", 0)) > gen.GENERATOR_BOUND


def _gen(found: dict[str, Any]) -> str:
    """The generator's share of its core, and the warning when it was the limit."""
    share = f"gen {found['generator_cpu']:.2f}"
    return f"{share}, **generator-bound**" if _bound(found) else share


def _publish_cell(p: dict[str, Any]) -> str:
    return (
        f"{p['events_per_s']:,.0f} ev/s (p50 {p['p50_ms']}, p99 {p['p99_ms']} ms; "
        f"{p['server_cpu_us_per_event']} µs CPU/ev; {_gen(p)})"
    )


def _fan_cell(f: dict[str, Any]) -> str:
    return (
        f"p50 {f['p50_ms']} / p99 {f['p99_ms']} ms; {f['delivered_per_s']:,.0f} msg/s "
        f"({f['published_per_s']:,.0f} ev/s taken); loss {f['loss_pct']} %; "
        f"dup {f['duplicates']}; {f['server_cpu_us_per_delivery']} µs CPU/msg; {_gen(f)}"
    )


def _per_core(microseconds: float | None, unit: str) -> str:
    """What the generator's CPU per operation allows on a core of its own."""
    if not microseconds:
        return ""
    return f"generator {microseconds} µs CPU each: about {1e6 / microseconds:,.0f} {unit} per core"


def _table(results: dict[str, Any]) -> str:
    memory, redis = results["replaybus_memory"], results["replaybus_redis"]
    nchan, faye = results["nchan"], results["faye"]
    bare, ceiling = results["bare"]["publish"], results["ceiling"]["publish"]
    lines = [
        "| Measurement | replaybus | peer | replaybus / peer |",
        "|---|---|---|---|",
    ]
    rp = redis["publish"]
    for name, peer in (("Faye+Redis", faye["publish"]), ("Nchan+Redis", nchan["publish"])):
        lines.append(
            f"| Publish, 32 connections (Redis) vs {name} | {_publish_cell(rp)} | {name} "
            f"{_publish_cell(peer)} | {_ratio(rp['events_per_s'], peer['events_per_s'])} |"
        )
    lines.append(
        f"| Publish (Redis) vs bare Starlette JSON POST | {rp['events_per_s']:,.0f} ev/s | "
        f"bare {_publish_cell(bare)} | {_ratio(rp['events_per_s'], bare['events_per_s'])} |"
    )
    mp = memory["publish"]
    lines.append(
        f"| Publish, memory engine vs bare Starlette | {_publish_cell(mp)} | | "
        f"{_ratio(mp['events_per_s'], bare['events_per_s'])} |"
    )
    for label, found in redis["fanout"].items():
        peer = nchan["fanout"].get(label) or faye["fanout"].get(label)
        name = "Nchan+Redis" if label in nchan["fanout"] else "Faye+Redis"
        ratio = _ratio(found["delivered_per_s"], peer["delivered_per_s"]) if peer else "-"
        peer_cell = f"{name} {_fan_cell(peer)}" if peer else "-"
        lines.append(f"| Fan-out {label} | {_fan_cell(found)} | {peer_cell} | {ratio} delivered |")
    rr, nr = redis["replay"], nchan["replay"]
    lines.append(
        f"| Replay {rr['events']:,} from -2 (Redis) | {rr['events_per_s']:,.0f} ev/s "
        f"(memory engine {memory['replay']['events_per_s']:,.0f}) | Nchan+Redis "
        f"{nr['events_per_s']:,.0f} ev/s | {_ratio(rr['events_per_s'], nr['events_per_s'])} |"
    )
    for transport, peer, name in (("sse", nchan, "Nchan"), ("bayeux", faye, "Faye")):
        for count, found in redis["idle"][transport].items():
            other = peer["idle"][transport][count]
            lines.append(
                f"| Idle {transport}, {count} | {found['kib_each']} KiB each | "
                f"{name} {other['kib_each']} KiB each | "
                f"{_ratio(found['kib_each'], other['kib_each'])} |"
            )
    lines.extend(_starlette_rows(results))
    lines.extend(_workers_rows(results["workers"]))
    lines.append(
        f"| Generator ceiling: publish (do-nothing server) | {_publish_cell(ceiling)} | "
        f"{_per_core(ceiling.get('generator_cpu_us_per_event'), 'ev/s')} | |"
    )
    for label, found in results["ceiling"].get("fanout", {}).items():
        # Not extrapolated per core: at low rates the cost per delivery is mostly wake-ups.
        cost = f"generator {found.get('generator_cpu_us_per_delivery')} µs CPU per delivery"
        lines.append(f"| Generator ceiling: fan-out {label} | {_fan_cell(found)} | {cost} | |")
    return "\n".join(lines)


def _starlette_rows(results: dict[str, Any]) -> list[str]:
    """The stack's own floors beside replaybus's stream: a bare StreamingResponse and
    sse-starlette's EventSourceResponse, each fed by per-subscriber queues (no engine)."""
    lines = []
    redis_idle = results["replaybus_redis"]["idle"]["sse"]
    for count, found in results["bare"]["idle"]["sse"].items():
        lines.append(
            f"| Idle sse, {count}: bare Starlette StreamingResponse (the stack's floor) | "
            f"{found['kib_each']} KiB each | replaybus "
            f"{redis_idle.get(count, {}).get('kib_each', '-')} KiB each | |"
        )
    apps = results["starlette_fanout"]
    names = {"/stream": "StreamingResponse + queue", "/sse-starlette": "sse-starlette"}
    for path, name in names.items():
        for count, found in apps[path]["idle"].items():
            lines.append(f"| Idle sse, {count}: {name} | {found['kib_each']} KiB each | | |")
        for label, found in apps[path]["fanout"].items():
            mine = results["replaybus_redis"]["fanout"].get(label)
            ratio = _ratio(mine["delivered_per_s"], found["delivered_per_s"]) if mine else "-"
            lines.append(
                f"| Fan-out {label}: {name} (no engine) | "
                f"{_fan_cell(mine) if mine else '-'} | {_fan_cell(found)} | {ratio} delivered |"
            )
    return lines


def _workers_rows(found: dict[str, Any]) -> list[str]:
    one, two = found["1"], found["2"]
    lines = []
    note = "(Redis, servers on both cores, generator sharing core 1)"
    lines.append(
        f"| Publish, 2 workers vs 1 {note} | {_publish_cell(two['publish'])} | "
        f"1 worker {_publish_cell(one['publish'])} | "
        f"{_ratio(two['publish']['events_per_s'], one['publish']['events_per_s'])} |"
    )
    for label, mine in two["fanout"].items():
        other = one["fanout"][label]
        lines.append(
            f"| Fan-out {label}, 2 workers vs 1 {note} | {_fan_cell(mine)} | "
            f"1 worker {_fan_cell(other)} | "
            f"{_ratio(mine['delivered_per_s'], other['delivered_per_s'])} delivered |"
        )
    return lines


def _targets(results: dict[str, Any]) -> list[str]:
    """The targets, each met or MISSED with its figure; one resting on a generator-bound row
    says so (then it measured the generator, not replaybus)."""
    redis, nchan, faye = results["replaybus_redis"], results["nchan"], results["faye"]
    bare = results["bare"]["publish"]
    checks: list[tuple[str, bool, str, list[dict[str, Any]]]] = []
    rp, fp = redis["publish"], faye["publish"]
    checks.append(
        (
            "publish (Redis) >= 1.0x Faye+Redis, p99 <= Faye's",
            rp["events_per_s"] >= fp["events_per_s"] and _at_most(rp["p99_ms"], fp["p99_ms"]),
            f"{_ratio(rp['events_per_s'], fp['events_per_s'])}, "
            f"p99 {rp['p99_ms']} vs {fp['p99_ms']} ms",
            [rp, fp],
        )
    )
    checks.append(
        (
            "publish (Redis) >= 0.7x bare Starlette",
            rp["events_per_s"] >= 0.7 * bare["events_per_s"],
            _ratio(rp["events_per_s"], bare["events_per_s"]),
            [rp, bare],
        )
    )
    mp = results["replaybus_memory"]["publish"]
    checks.append(
        (
            "publish (memory) >= 0.8x bare Starlette",
            mp["events_per_s"] >= 0.8 * bare["events_per_s"],
            _ratio(mp["events_per_s"], bare["events_per_s"]),
            [mp, bare],
        )
    )
    fan = redis["fanout"]
    label = "bayeux 100 subs @ 100/s"
    unmeasured: list[str] = []  # sizes a --quick run leaves out
    if label in fan and label in faye["fanout"]:
        found, peer = fan[label], faye["fanout"][label]
        checks.append(
            (
                f"{label}: p99 <= Faye+Redis's",
                _at_most(found["p99_ms"], peer["p99_ms"]),
                f"p99 {found['p99_ms']} vs {peer['p99_ms']} ms",
                [found, peer],
            )
        )
    for label, bound in (("bayeux 1000 subs @ 100/s", 1000.0), ("bayeux 1000 subs @ 1000/s", None)):
        wanted = "0 loss" + (f", p99 <= {bound:g} ms" if bound else "")
        if label not in fan:
            unmeasured.append(f"{label}: {wanted}")
        else:
            found = fan[label]
            met = found["loss_pct"] == 0 and (bound is None or _at_most(found["p99_ms"], bound))
            checks.append(
                (
                    f"{label}: {wanted}",
                    met,
                    f"loss {found['loss_pct']} %, p99 {found['p99_ms']} ms",
                    [found],
                )
            )
    label = "sse 1000 subs @ 100/s"
    if label not in fan:
        unmeasured.append(f"{label}: p99 <= 50 ms, delivered = published")
    else:
        found = fan[label]
        checks.append(
            (
                f"{label}: p99 <= 50 ms, delivered = published",
                _at_most(found["p99_ms"], 50) and found["loss_pct"] == 0,
                f"p99 {found['p99_ms']} ms, loss {found['loss_pct']} %",
                [found],
            )
        )
    for transport in ("sse", "bayeux"):
        largest = max(redis["idle"][transport], key=int)
        kib = redis["idle"][transport][largest]["kib_each"]
        checks.append(
            (f"idle {transport} at {largest} <= 16 KiB each", kib <= 16, f"{kib} KiB", [])
        )
    rr, nr = redis["replay"], nchan["replay"]
    checks.append(
        (
            "replay >= 3x Nchan+Redis",
            rr["events_per_s"] >= 3 * nr["events_per_s"],
            _ratio(rr["events_per_s"], nr["events_per_s"]),
            [rr, nr],
        )
    )
    lines = []
    for name, met, figure, rows in checks:
        warning = " (generator-bound: measures the generator)" if any(map(_bound, rows)) else ""
        lines.append(f"- {'met' if met else 'MISSED'}: {name} ({figure}){warning}")
    return lines + [f"- not measured in this run: {name}" for name in unmeasured]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (checks the harness)")
    parser.add_argument(
        "--json", default="bench-results/latest.json", help="where to write the results"
    )
    arguments = parser.parse_args(argv)
    _say("building the load generator ...")
    gen.binary()
    started = time.monotonic()
    results = _bench(arguments.quick)
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
        "on a server that fell behind). gen: the generator's CPU over the measured phase, as a "
        f"share of its core; above {gen.GENERATOR_BOUND} the row is generator-bound (its "
        "figure is the generator's limit, not the server's)."
    )
    print(f"Generator: {GENERATOR}. Whole run: {document['seconds']} s. JSON: {arguments.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
