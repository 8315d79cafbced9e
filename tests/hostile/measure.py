"""Tenant B's delivery latency while tenant A attacks: a measurement, not a test.

    python -m tests.hostile.measure [--backing memory|redis+postgres] [--seconds 10] [ATTACK ...]

runs B's steady workload (20 events/s, one SSE and one Bayeux subscriber) on a fresh node, first
with no attack, then with each attack (all by default) for `--seconds`, and prints one row per
run: B's delivery latency p50/p99 per subscriber (publish sent to event received), the fewest
deliveries B got in any one-second window, B's publish p99, and how many problems B saw and
findings A made (what `tests/hostile` asserts are zero); then each problem and finding.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import asyncpg

from storage.postgres import apply_migrations
from tests.harness.postgres import running_postgres
from tests.harness.redis import running_redis
from tests.hostile.arena import Arena, Attack, Backing, arena, under_attack
from tests.hostile.attacks import ATTACKS

_COLUMNS = (
    "attack",
    "sse p50/p99 ms",
    "bayeux p50/p99 ms",
    "min/s sse, bayeux",
    "publish p99 ms",
    "B problems",
    "A findings",
)


async def no_attack(arena: Arena) -> None:
    """The baseline: B alone on the node."""
    await asyncio.Event().wait()


_BASELINE = Attack(no_attack)


async def _measure(backing: Backing, names: Sequence[str], seconds: float) -> None:
    print(" | ".join(_COLUMNS))
    print(" | ".join("---" for _ in _COLUMNS))
    notes: list[str] = []
    for name in ("none", *names):
        attack = _BASELINE if name == "none" else ATTACKS[name]
        async with arena(backing, attack.settings) as node:
            report = await under_attack(node, attack, seconds)
        sse, bayeux = report.subscribers["sse"], report.subscribers["bayeux"]
        row = (
            name,
            f"{sse.latency_ms['p50']} / {sse.latency_ms['p99']}",
            f"{bayeux.latency_ms['p50']} / {bayeux.latency_ms['p99']}",
            f"{min(sse.windows, default=0)}, {min(bayeux.windows, default=0)}",
            str(report.publish_ms["p99"]),
            str(len(report.problems())),
            str(len(node.findings)),
        )
        print(" | ".join(row), flush=True)
        notes += [f"{name}: B: {problem}" for problem in report.problems()]
        notes += [f"{name}: A: {finding}" for finding in node.findings]
    if notes:
        print()
        print("\n".join(notes))


async def _migrate(url: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await apply_migrations(connection)
    finally:
        await connection.close()


@contextlib.contextmanager
def _backing(name: str) -> Iterator[Backing]:
    if name == "memory":
        yield Backing()
        return
    with running_redis() as redis, running_postgres() as postgres:
        with ThreadPoolExecutor(1) as thread:
            thread.submit(asyncio.run, _migrate(postgres.url())).result(timeout=60)
        yield Backing(redis, postgres)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.hostile.measure", description=__doc__)
    parser.add_argument("attacks", nargs="*", metavar="ATTACK", help=", ".join(ATTACKS))
    parser.add_argument("--backing", choices=["memory", "redis+postgres"], default="memory")
    parser.add_argument("--seconds", type=float, default=10.0, help="each attack's duration")
    arguments = parser.parse_args(argv)
    unknown = sorted(set(arguments.attacks) - set(ATTACKS))
    if unknown:
        parser.error(f"unknown attacks {', '.join(unknown)}; known: {', '.join(ATTACKS)}")
    with _backing(arguments.backing) as backing:
        asyncio.run(_measure(backing, arguments.attacks or list(ATTACKS), arguments.seconds))


if __name__ == "__main__":
    main()
