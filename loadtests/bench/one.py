"""One benchmark scenario against replaybus alone, for profiling and before/after checks of a
change (the full comparison with the peers is `make bench`). Same pinning as `make bench`: the
server and its Redis on core 0, the compiled generator (loadtests/gen) on core 1. Prints the
result as JSON; `generator_cpu` is the generator's share of its core (above 0.8 the figure is
the generator's limit, not the server's).

    python -m loadtests.bench.one publish [--engine memory|redis] [--runs 3] [--workers 2]
    python -m loadtests.bench.one publish --server bare   # the framework's floor
    python -m loadtests.bench.one fanout --transport sse|bayeux --subscribers 1000 --rate 100
    python -m loadtests.bench.one replay [--events 20000]
    python -m loadtests.bench.one idle --transport sse|bayeux --count 5000
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from loadtests.bench import scenarios
from loadtests.bench.servers import pin, running_bare_starlette, running_replaybus
from loadtests.bench.targets import Target, publish_only, replaybus_target
from tests.harness.redis import running_redis

SERVER_CPU = 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtests.bench.one")
    parser.add_argument("scenario", choices=["publish", "fanout", "replay", "idle"])
    parser.add_argument(
        "--server",
        choices=["replaybus", "bare"],
        default="replaybus",
        help="bare: the bare Starlette JSON POST endpoint (publish only), measured the same way",
    )
    parser.add_argument("--engine", choices=["memory", "redis"], default="redis")
    parser.add_argument("--transport", choices=["sse", "bayeux"], default="sse")
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--runs", type=int, default=3, help="publish: runs, each reported")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=1, help="replaybus worker processes")
    return parser


def _publish_runs(target: Target, arguments: argparse.Namespace) -> dict[str, Any]:
    runs = [
        scenarios.publish_throughput(target, seconds=arguments.seconds)
        for _ in range(arguments.runs)
    ]
    return {"runs": runs}


def _run(arguments: argparse.Namespace) -> dict[str, Any]:
    if arguments.server == "bare":
        if arguments.scenario != "publish":
            raise SystemExit("--server bare has only the publish scenario")
        with running_bare_starlette(SERVER_CPU) as server:
            return _publish_runs(publish_only(server, "/event/One__e"), arguments)
    with running_redis() as redis:
        pin(redis.process.pid, SERVER_CPU)
        redis_url = redis.url if arguments.engine == "redis" else None
        extra = {"REPLAYBUS_BAYEUX_MAX_CLIENTS": "20000"}
        with running_replaybus(SERVER_CPU, redis_url, extra, arguments.workers) as server:
            target = replaybus_target(server, "/event/One__e")
            if arguments.scenario == "publish":
                return _publish_runs(target, arguments)
            if arguments.scenario == "fanout":
                return scenarios.fanout(
                    target,
                    arguments.transport,
                    arguments.subscribers,
                    arguments.rate,
                    seconds=arguments.seconds,
                )
            if arguments.scenario == "replay":
                return scenarios.replay_catch_up(target, arguments.events)
            return scenarios.idle_memory(target, arguments.transport, (arguments.count,))


def main(argv: Sequence[str] | None = None) -> None:
    arguments = _parser().parse_args(argv)
    result = _run(arguments)
    print(json.dumps({"scenario": vars(arguments), "result": result}, indent=2))


if __name__ == "__main__":
    main()
