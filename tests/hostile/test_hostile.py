"""The hostile neighbour: while tenant A attacks a node, tenant B's steady workload on the same
node loses nothing (every published event delivered once, in order, to its SSE and its Bayeux
subscriber), sees no error, is granted every token it asks for, and keeps receiving events in
every one-second window. And A gets no answer it should not (a 5xx other than 503, metrics
naming B), but every answer showing that its attack reached the limits it aims at.

No timing thresholds: B's latency figures come from `python -m tests.hostile.measure`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.postgres import RunningPostgres
from tests.harness.redis import RunningRedis
from tests.hostile.arena import Backing, arena, under_attack
from tests.hostile.attacks import ATTACKS

ATTACK_S = 3.0
#: Attacks whose cost lands in the engine or the catalog run on Redis and PostgreSQL, as a
#: production node does; the others cost the same in front of any storage (validation, HTTP,
#: the token hash, the validators built from schemas the catalog holds, forged addresses a
#: worker counts by), so they run on the embedded engine and catalog. Each runs once here;
#: `python -m tests.hostile.measure --backing ...` runs any of them on either.
_STORAGE_BOUND = (
    "publish_flood",
    "stream_flood",
    "bayeux_garbage",
    "token_abuse",
    "retention_shrink",
    "composite_all_or_none",
    "tenant_churn",
    "history_reads",
    "wildcard_subscriptions",
)
_RUNS = [(name, "redis+postgres" if name in _STORAGE_BOUND else "memory") for name in ATTACKS]


@pytest.fixture
def backing(request: pytest.FixtureRequest) -> Iterator[Backing]:
    if request.param == "memory":
        yield Backing()
        return
    redis: RunningRedis = request.getfixturevalue("redis_server")
    postgres: RunningPostgres = request.getfixturevalue("postgres_server")
    yield Backing(redis, postgres)


@pytest.mark.parametrize(
    ("attack", "backing"), _RUNS, ids=[f"{a}-{b}" for a, b in _RUNS], indirect=["backing"]
)
async def test_the_neighbour_is_unharmed(attack: str, backing: Backing) -> None:
    async with arena(backing, ATTACKS[attack].settings) as node:
        report = await under_attack(node, ATTACKS[attack], ATTACK_S)
    problems = [f"B: {problem}" for problem in report.problems()]
    problems += [f"A: {finding}" for finding in node.findings]
    assert not problems, "\n".join(problems)
