"""One real node shared by two tenants: A, the attacker (a tenant admin of its own tenant, which
also acts as an anonymous caller), and B, the neighbour whose steady workload must not notice.

The node runs as a production chart would: behind an ingress it trusts for forwarded headers
(`REPLAYBUS_FORWARDED_ALLOW_IPS=*`) with `/metrics` meant for the in-cluster network only.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.e2e.server import fresh_catalog_database, run_server
from tests.harness.postgres import RunningPostgres
from tests.harness.redis import RunningRedis
from tests.hostile.neighbour import Report, neighbour

__all__ = ["Arena", "Attack", "Backing", "arena", "under_attack"]

OPERATOR_KEY = "hostile-operator-key-0123456789"
#: The scrapers' network: the node's own peers (loopback, where the attacker is) are outside it.
METRICS_NETWORK = "10.0.0.0/8"
_NODE_ENV = {
    "REPLAYBUS_OPERATOR_KEY": OPERATOR_KEY,
    "REPLAYBUS_FORWARDED_ALLOW_IPS": "*",
    "REPLAYBUS_METRICS_ALLOWED_NETWORKS": METRICS_NETWORK,
}
_CANCEL_S = 30.0  # for an attack to let go of its connections once told to stop


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
    attacker: str  # A's tenant id
    attacker_client: tuple[str, str]  # A's client id and secret (publish, subscribe, admin)
    attacker_token: str
    neighbour: str  # B's tenant id
    neighbour_token: str
    neighbour_channel: str
    #: What A saw that it should not have: a 5xx other than 503, metrics naming B. Attacks
    #: append to it; a clean run leaves it empty.
    findings: list[str] = field(default_factory=list)

    @property
    def address(self) -> tuple[str, int]:
        parts = urlsplit(self.base_url)
        assert parts.hostname is not None
        assert parts.port is not None
        return parts.hostname, parts.port

    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.attacker_token}"}

    def find(self, finding: str) -> None:
        """Record something A should never have got (each kind once)."""
        if finding not in self.findings and len(self.findings) < 20:
            self.findings.append(finding)

    def check(self, what: str, status: int, body: bytes = b"") -> None:
        """Record a response A should never get: a server error other than 503."""
        if status >= 500 and status != 503:
            self.find(f"{what}: {status} {body[:200]!r}")


Attack = Callable[[Arena], Coroutine[Any, Any, None]]


async def _tenant_with_client(
    http: httpx.AsyncClient, tenant: str, scopes: list[str]
) -> tuple[str, str, str]:
    operator = {"Authorization": f"Bearer {OPERATOR_KEY}"}
    created = await http.post("/v1/admin/tenants", json={"tenantId": tenant}, headers=operator)
    assert created.status_code == 201, created.text
    issued = await http.post(
        f"/v1/admin/tenants/{tenant}/clients", json={"scopes": scopes}, headers=operator
    )
    assert issued.status_code == 201, issued.text
    client_id, secret = issued.json()["clientId"], issued.json()["clientSecret"]
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    token = await http.post("/v1/oauth/token", data=form)
    assert token.status_code == 200, token.text
    return client_id, secret, str(token.json()["access_token"])


@asynccontextmanager
async def arena(backing: Backing) -> AsyncIterator[Arena]:
    """A fresh node with tenants A and B, their clients and tokens."""
    env = dict(_NODE_ENV)
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
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            attacker = await _tenant_with_client(
                http, f"A{suffix}", ["publish", "subscribe", "admin"]
            )
            victim = await _tenant_with_client(http, f"B{suffix}", ["publish", "subscribe"])
        yield Arena(
            base_url=server.base_url,
            attacker=f"A{suffix}",
            attacker_client=(attacker[0], attacker[1]),
            attacker_token=attacker[2],
            neighbour=f"B{suffix}",
            neighbour_token=victim[2],
            neighbour_channel="/event/Steady__e",
        )
    finally:
        await asyncio.to_thread(node.__exit__, None, None, None)


async def under_attack(arena: Arena, attack: Attack, seconds: float) -> Report:
    """B's report of a run where A attacks for `seconds` once B is steady, then stops; B goes
    on for one more second, so the windows also cover the node's recovery."""
    async with neighbour(arena.base_url, arena.neighbour_token, arena.neighbour_channel) as b:
        attacking = asyncio.create_task(attack(arena))
        await asyncio.wait({attacking}, timeout=seconds)
        if attacking.done():
            attacking.result()  # an attack runs until told to stop: this is its own failure
        else:
            attacking.cancel()
            async with asyncio.timeout(_CANCEL_S):
                await asyncio.gather(attacking, return_exceptions=True)
        await asyncio.sleep(1.0)  # the steady state after the attack, part of the windows
        return await b.stop()
