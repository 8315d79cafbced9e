"""One real node shared by two tenants: A, the attacker (a tenant admin of its own tenant, which
also acts as an anonymous caller), and B, the neighbour whose steady workload must not notice.

The node runs as a production chart would: behind an ingress it trusts for forwarded headers
(`REPLAYBUS_FORWARDED_ALLOW_IPS=*`) with `/metrics` meant for the in-cluster network only. Its
read deadlines are short (`REPLAYBUS_HEADER_TIMEOUT` 1 s, `REPLAYBUS_BODY_TIMEOUT` 2 s), so a
few seconds of attack outlast them; an attack may add settings of its own.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.e2e.server import TenantClient, fresh_catalog_database, run_server, tenant_with_client
from tests.harness.postgres import RunningPostgres
from tests.harness.redis import RunningRedis
from tests.hostile.neighbour import Report, neighbour

__all__ = ["Arena", "Attack", "Backing", "arena", "operator", "under_attack"]

OPERATOR_KEY = "hostile-operator-key-0123456789"
#: The scrapers' network: the node's own peers (loopback, where the attacker is) are outside it.
METRICS_NETWORK = "10.0.0.0/8"
HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 2.0
_NODE_ENV = {
    "REPLAYBUS_OPERATOR_KEY": OPERATOR_KEY,
    "REPLAYBUS_FORWARDED_ALLOW_IPS": "*",
    "REPLAYBUS_METRICS_ALLOWED_NETWORKS": METRICS_NETWORK,
    "REPLAYBUS_HEADER_TIMEOUT": f"{HEADER_TIMEOUT_S}s",
    "REPLAYBUS_BODY_TIMEOUT": f"{BODY_TIMEOUT_S}s",
}
_CANCEL_S = 30.0  # for an attack to let go of its connections once told to stop
_BUILD_UP_S = 60.0  # for an attack that builds up to get to full strength
_PROOF_S = 60.0  # more, for an attack whose proof is not yet in (a slow, busy machine)


@dataclass(frozen=True)
class Backing:
    """What the node keeps its state in: the embedded memory engine and catalog, or a Redis
    engine and a PostgreSQL catalog."""

    redis: RunningRedis | None = None
    postgres: RunningPostgres | None = None

    @property
    def name(self) -> str:
        return "memory" if self.redis is None else "redis+postgres"


@dataclass
class Arena:
    base_url: str
    attacker: TenantClient  # A's first client: publish, subscribe, admin
    neighbour: TenantClient  # B's client: publish, subscribe
    neighbour_channel: str
    #: Tokens of A's further clients, for attacks that need many (made by their preparation).
    attacker_tokens: list[str] = field(default_factory=list)
    #: What A saw that it should not have: a 5xx other than 503, metrics naming B. Attacks
    #: append to it; a clean run leaves it empty.
    findings: list[str] = field(default_factory=list)
    #: Every (what, status) A was answered: what an attack must have reached is among them.
    answers: set[tuple[str, int]] = field(default_factory=set)
    #: Set by an attack that builds up (opening connections) once it is at full strength.
    engaged: asyncio.Event = field(default_factory=asyncio.Event)
    #: The answers the running attack must get, and the event set once A has had them all.
    awaited: frozenset[tuple[str, int]] = frozenset()
    proven: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def address(self) -> tuple[str, int]:
        parts = urlsplit(self.base_url)
        assert parts.hostname is not None
        assert parts.port is not None
        return parts.hostname, parts.port

    def bearer(self) -> dict[str, str]:
        return self.attacker.bearer

    def find(self, finding: str) -> None:
        """Record something A should never have got (each kind once)."""
        if finding not in self.findings and len(self.findings) < 20:
            self.findings.append(finding)

    def check(self, what: str, status: int, body: bytes = b"") -> None:
        """Note A's answer; record one A should never get: a server error other than 503."""
        self.answers.add((what, status))
        if self.awaited <= self.answers:
            self.proven.set()
        if status >= 500 and status != 503:
            self.find(f"{what}: {status} {body[:200]!r}")


@dataclass(frozen=True)
class Attack:
    """What A does: `prepare` (if any) readies it before B starts, then `run` attacks until
    cancelled, on a node with the arena's settings and `settings`. `proof` lists answers
    (what, status) A must have got, showing that the attack reached the limits it aims at. An
    attack that `builds_up` sets `arena.engaged` once at full strength, and its time counts from
    then. An attack that needs longer than the run's time to reach its limits says so in
    `lasts` (seconds)."""

    run: Callable[[Arena], Coroutine[Any, Any, None]]
    prepare: Callable[[Arena], Coroutine[Any, Any, None]] | None = None
    settings: Mapping[str, str] = field(default_factory=dict)
    proof: frozenset[tuple[str, int]] = frozenset()
    builds_up: bool = False
    lasts: float = 0.0

    @property
    def name(self) -> str:
        return self.run.__name__


@asynccontextmanager
async def arena(
    backing: Backing, settings: Mapping[str, str] | None = None
) -> AsyncIterator[Arena]:
    """A fresh node (with `settings` on top of the arena's) and tenants A and B, with their
    clients and tokens."""
    env = {**_NODE_ENV, **(settings or {})}
    if backing.redis is not None:
        assert backing.postgres is not None
        env["REPLAYBUS_REDIS_URL"] = backing.redis.url
        env["REPLAYBUS_DATABASE_URL"] = await asyncio.to_thread(
            fresh_catalog_database, backing.postgres, "hostile"
        )
    suffix = uuid.uuid4().hex[:8]
    node = run_server(env)
    server = await asyncio.to_thread(node.__enter__)
    try:
        attacker, victim = await asyncio.gather(
            asyncio.to_thread(
                tenant_with_client,
                server.base_url,
                OPERATOR_KEY,
                ["publish", "subscribe", "admin"],
                f"A{suffix}",
            ),
            asyncio.to_thread(
                tenant_with_client,
                server.base_url,
                OPERATOR_KEY,
                ["publish", "subscribe"],
                f"B{suffix}",
            ),
        )
        yield Arena(server.base_url, attacker, victim, "/event/Steady__e")
    finally:
        await asyncio.to_thread(node.__exit__, None, None, None)


async def under_attack(arena: Arena, attack: Attack, seconds: float) -> Report:
    """B's report of a run where A, once prepared and once B is steady, attacks for `seconds`
    or the attack's own `lasts`, whichever is longer (after building up, if it does), then
    stops; B goes on for one more second, so the windows also cover the node's recovery. An
    attack whose `proof` is not all in by then goes on until it is, for at most `_PROOF_S`
    more; an answer of `attack.proof` that A still never got is recorded as a finding."""
    if attack.prepare is not None:
        await attack.prepare(arena)
    arena.awaited = attack.proof
    if attack.proof <= arena.answers:
        arena.proven.set()
    async with neighbour(arena.base_url, arena.neighbour, arena.neighbour_channel) as b:
        attacking = asyncio.create_task(attack.run(arena))
        if attack.builds_up:
            engaged = asyncio.create_task(arena.engaged.wait())
            await asyncio.wait(
                {attacking, engaged}, timeout=_BUILD_UP_S, return_when=asyncio.FIRST_COMPLETED
            )
            engaged.cancel()
        await asyncio.wait({attacking}, timeout=max(seconds, attack.lasts))
        if not attacking.done() and not arena.proven.is_set():
            # Its time is up before it reached what it aims at (a deadline that elapses only
            # after seconds of a loaded machine): it goes on until it has, within a bound.
            proven = asyncio.create_task(arena.proven.wait())
            await asyncio.wait(
                {attacking, proven}, timeout=_PROOF_S, return_when=asyncio.FIRST_COMPLETED
            )
            proven.cancel()
        if attacking.done():
            attacking.result()  # an attack runs until told to stop: this is its own failure
        else:
            attacking.cancel()
            async with asyncio.timeout(_CANCEL_S):
                await asyncio.gather(attacking, return_exceptions=True)
        await asyncio.sleep(1.0)  # the steady state after the attack, part of the windows
        report = await b.stop()
    for what, status in sorted(attack.proof - arena.answers):
        arena.find(f"{attack.name} never got {status} for {what}: it missed what it aims at")
    return report


async def operator(
    http: httpx.AsyncClient, method: str, path: str, json: object = None
) -> httpx.Response:
    """An admin call with the operator key (the node's own operator, not A)."""
    headers = {"Authorization": f"Bearer {OPERATOR_KEY}"}
    return await http.request(method, path, json=json, headers=headers)
