"""A failover to a replica, rehearsed with real processes: a node publishes through a proxy (the
address a promoted replica takes over) to a primary whose replica (`--replicaof`, through a
proxy of its own) falls behind; the primary is killed (SIGKILL) while publishers are at work,
the replica is promoted (`REPLICAOF NO ONE`) and the address moved to it.

With REPLAYBUS_REDIS_MIN_REPLICAS=1 every acknowledged event is on the promoted replica, and
ReplayIds only grow. With 0, events acknowledged before the failover may be lost, so every
position from before it is answered with an explicit gap."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis
from httpx_sse import aconnect_sse

from tests.e2e.server import REDIS_FAULT_TIMEOUTS, RunningServer, run_server
from tests.e2e.sse import channel_name, dispatched
from tests.harness.redis import RunningRedis, running_redis, running_replica
from tests.harness.tcp_proxy import TcpProxy, tcp_proxy

PUBLISHERS = 3
#: Each publisher's most publishes: the loop is bounded even if the failover never came.
MOST = 200
#: Acknowledged events before the replica falls behind, and answers after it did.
BEFORE_LAG, DURING_LAG = 20, 9
WAIT_S = 20.0


@dataclass
class _Publishers:
    """What the publishers were answered, in order of arrival."""

    acknowledged: list[int] = field(default_factory=list)
    refusals: list[dict[str, Any]] = field(default_factory=list)
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    stop: bool = False

    @property
    def count(self) -> int:
        return len(self.acknowledged) + len(self.refusals)

    async def until(self, count: int) -> None:
        async with asyncio.timeout(WAIT_S):
            while self.count < count:
                self.answered.clear()
                await self.answered.wait()

    async def run(self, client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> None:
        for number in range(MOST):
            if self.stop:
                return
            key = {"Idempotency-Key": uuid.uuid4().hex}
            response = await client.post(url, json={"n": number}, headers=headers | key)
            if response.status_code == 201:
                self.acknowledged.append(response.json()["replayId"])
            else:
                assert response.status_code == 503, response.text
                self.refusals.append(response.json())
            self.answered.set()


@dataclass
class _Failover:
    server: RunningServer
    primary: RunningRedis
    front: TcpProxy  # the address the node reaches Redis at
    link: TcpProxy  # the replica's way to the primary
    replica: RunningRedis
    channel: str
    headers: dict[str, str]
    answers: _Publishers

    @property
    def url(self) -> str:
        return f"{self.server.base_url}/v1/events{self.channel}"


@contextmanager
def _failover_rig(env: dict[str, str]) -> Iterator[tuple[ExitStack, _Failover]]:
    """A primary, its replica, and a node; the stack takes whatever the test starts later."""
    with ExitStack() as stack:
        primary = stack.enter_context(running_redis())
        front = stack.enter_context(tcp_proxy(primary.port))
        link = stack.enter_context(tcp_proxy(primary.port))  # replication goes through it
        replica = stack.enter_context(running_replica(link.port))
        url = f"redis://127.0.0.1:{front.port}/0"
        server = stack.enter_context(
            run_server({"REPLAYBUS_REDIS_URL": url, **REDIS_FAULT_TIMEOUTS, **env})
        )
        headers = {"Authorization": f"Bearer {server.token()}"}
        yield (
            stack,
            _Failover(
                server, primary, front, link, replica, channel_name(), headers, _Publishers()
            ),
        )


async def _publish_through_a_failover(client: httpx.AsyncClient, rig: _Failover) -> None:
    """Publish, let the replica fall behind, kill the primary mid-publishing (the publishers
    stop once their publishes in flight are answered), promote the replica and move the node's
    address to it."""
    answers = rig.answers
    publishers = [
        asyncio.create_task(answers.run(client, rig.url, rig.headers)) for _ in range(PUBLISHERS)
    ]
    try:
        await answers.until(BEFORE_LAG)
        rig.link.silence()  # the replica stops hearing from the primary
        await answers.until(answers.count + DURING_LAG)
        rig.primary.process.kill()
        rig.primary.process.wait()
    finally:
        answers.stop = True
        await asyncio.gather(*publishers)
    promoted = redis.Redis(host="127.0.0.1", port=rig.replica.port, socket_timeout=10)
    promoted.replicaof("NO", "ONE")
    promoted.close()
    rig.front.retarget(rig.replica.port)


async def _publish_until_acknowledged(client: httpx.AsyncClient, rig: _Failover) -> int:
    """A new event's ReplayId, publishing again while the node's old connections fail."""
    async with asyncio.timeout(WAIT_S):
        while True:
            response = await client.post(rig.url, json={"after": True}, headers=rig.headers)
            if response.status_code == 201:
                replay_id: int = response.json()["replayId"]
                return replay_id
            await asyncio.sleep(0.05)  # another process's state: nothing to await but it


async def _history(client: httpx.AsyncClient, rig: _Failover, after: int) -> dict[str, Any]:
    response = await client.get(
        rig.url, params={"after": str(after), "limit": "1000"}, headers=rig.headers
    )
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def test_with_one_required_replica_every_acknowledged_event_survives_the_failover() -> None:
    env = {"REPLAYBUS_REDIS_MIN_REPLICAS": "1", "REPLAYBUS_REDIS_REPLICA_TIMEOUT": "200ms"}
    with _failover_rig(env) as (stack, rig):
        async with httpx.AsyncClient(timeout=30) as client:
            await _publish_through_a_failover(client, rig)
            # The promoted replica needs a replica of its own before anything is acknowledged.
            stack.enter_context(running_replica(rig.replica.port))
            after = [await _publish_until_acknowledged(client, rig) for _ in range(3)]
            acknowledged = rig.answers.acknowledged
            page = await _history(client, rig, -2)
            resumed = await _history(client, rig, min(acknowledged))

    kept = {event["replayId"] for event in page["events"]}
    assert "gap" not in resumed  # the failover lost nothing acknowledged: no position is lost
    assert len(acknowledged) >= BEFORE_LAG
    assert set(acknowledged) <= kept
    assert min(after) > max(acknowledged)
    assert after == sorted(after)
    # While the replica lagged, publishes were refused with their fate, not acknowledged.
    unreplicated = [r for r in rig.answers.refusals if r["error"] == "not_replicated"]
    assert unreplicated
    assert all("Idempotency-Key" in refusal["message"] for refusal in unreplicated)


async def test_without_required_replicas_every_position_from_before_the_failover_is_a_gap() -> None:
    with _failover_rig({}) as (_, rig):
        async with httpx.AsyncClient(timeout=30) as client:
            await _publish_through_a_failover(client, rig)
            after = await _publish_until_acknowledged(client, rig)
            acknowledged = rig.answers.acknowledged
            pages = {n: await _history(client, rig, n) for n in acknowledged}
            last = max(acknowledged)
            stream_url = f"{rig.server.base_url}/v1/stream{rig.channel}"
            resume = rig.headers | {"Last-Event-ID": str(last)}
            async with aconnect_sse(client, "GET", stream_url, headers=resume) as source:
                first = await anext(dispatched(source))

    assert len(acknowledged) >= BEFORE_LAG + DURING_LAG
    assert after > last
    missing = [n for n, page in pages.items() if page.get("gap", {}).get("requested") != n]
    assert missing == []
    assert first.event == "gap"
    assert first.json()["requested"] == last
