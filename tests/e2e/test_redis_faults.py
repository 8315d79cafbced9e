"""Rehearsed Redis faults: connections cut during publishing, a Redis that goes silent (paused,
or a connection that dies without a reset), and a Redis restart with AOF. A client never gets a
hang and never sees Redis's address."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from httpx_sse import aconnect_sse

from tests.e2e.server import REDIS_FAULT_TIMEOUTS, run_server
from tests.e2e.sse import channel_name, dispatched, publish
from tests.harness.redis import running_redis
from tests.harness.tcp_proxy import tcp_proxy

EVENTS = 300
#: How long healing may take: the live feed's reconnect backoff is capped at 5 s
#: (storage/redis/live.py), plus a loaded two-core machine's margin.
HEAL_S = 30.0


def _names_no_address(response: httpx.Response, port: int) -> None:
    assert "127.0.0.1" not in response.text, response.text
    assert str(port) not in response.text, response.text


async def _eventually(
    request: Callable[[], Awaitable[httpx.Response]], status: int
) -> httpx.Response:
    """`request` again until it answers `status` (within HEAL_S)."""
    give_up = time.monotonic() + HEAL_S
    while True:
        response = await request()
        if response.status_code == status or time.monotonic() > give_up:
            return response
        await asyncio.sleep(0.1)  # another process's state: nothing to await but it


async def test_cut_redis_connections_give_503_never_a_false_201_and_lose_nothing() -> None:
    with running_redis() as redis, tcp_proxy(redis.port) as proxy:
        proxied = f"redis://127.0.0.1:{proxy.port}/0"
        with run_server({"REPLAYBUS_REDIS_URL": proxied}) as server:
            token = server.token()
            channel = channel_name()
            headers = {"Authorization": f"Bearer {token}"}
            url = f"{server.base_url}/v1/events{channel}"
            acknowledged: list[int] = []
            statuses: set[int] = set()
            async with (
                httpx.AsyncClient(timeout=30) as client,
                aconnect_sse(
                    client, "GET", f"{server.base_url}/v1/stream{channel}", headers=headers
                ) as source,
            ):
                for number in range(EVENTS):
                    if number == EVENTS // 3:
                        proxy.cut()
                        not_ready = await client.get(f"{server.base_url}/readyz")
                    if number == EVENTS // 2:
                        proxy.restore()
                    response = await client.post(url, json={"n": number}, headers=headers)
                    statuses.add(response.status_code)
                    if response.status_code == 201:
                        acknowledged.append(response.json()["replayId"])
                    else:
                        assert response.json()["error"] == "engine_unavailable"
                        _names_no_address(response, proxy.port)
                received: list[int] = []
                events = dispatched(source)
                async with asyncio.timeout(30):
                    while not set(acknowledged) <= set(received):
                        received.append(int((await anext(events)).id))
                history = (await client.get(url, params={"limit": 1000}, headers=headers)).json()
    stored = [event["replayId"] for event in history["events"]]
    assert statuses == {201, 503}
    assert not_ready.status_code == 503, not_ready.text
    _names_no_address(not_ready, proxy.port)
    assert set(acknowledged) <= set(stored)
    assert received == sorted(set(received))  # in order, no duplicates
    assert set(received) <= set(stored)


async def test_events_and_replay_ids_survive_a_redis_restart_with_aof(tmp_path: Path) -> None:
    """Redis fsyncs every write before answering, and the node is told so: a restart (which
    gives Redis a new replication id) keeps every position resumable."""
    aof = ["--appendonly", "yes", "--appendfsync", "always"]
    fsynced = {"REPLAYBUS_REDIS_FSYNC": "always"}
    with running_redis(aof, directory=tmp_path) as redis:
        port = redis.port
        with run_server({"REPLAYBUS_REDIS_URL": redis.url, **fsynced}) as server:
            token = server.token()
            channel = channel_name()
            async with httpx.AsyncClient(timeout=30) as client:
                before = [
                    (await publish(client, server.base_url, token, channel, {"n": n}))["replayId"]
                    for n in range(20)
                ]
    with (
        running_redis(aof, port=port, directory=tmp_path) as redis,
        run_server({"REPLAYBUS_REDIS_URL": redis.url, **fsynced}) as server,
    ):
        token = server.token()
        async with httpx.AsyncClient(timeout=30) as client:
            history = (
                await client.get(
                    f"{server.base_url}/v1/events{channel}",
                    headers={"Authorization": f"Bearer {token}"},
                )
            ).json()
            after = await publish(client, server.base_url, token, channel, {"n": 20})
    assert [event["replayId"] for event in history["events"]] == before
    assert history["window"]["latest"] == before[-1]
    assert after["replayId"] > before[-1]


async def test_a_silent_redis_answers_503_instead_of_hanging_and_heals() -> None:
    """Redis stops answering without closing anything (a paused server): open connections go
    quiet mid-command and new ones are accepted but never answered. Publishes end in 503 within
    the timeouts, /readyz fails, neither names Redis's address (the log does), and all heals
    once Redis answers again."""
    with running_redis() as redis, tcp_proxy(redis.port) as proxy:
        env = {"REPLAYBUS_REDIS_URL": f"redis://127.0.0.1:{proxy.port}/0", **REDIS_FAULT_TIMEOUTS}
        with run_server(env) as server:
            headers = {"Authorization": f"Bearer {server.token()}"}
            channel = channel_name()
            url = f"{server.base_url}/v1/events{channel}"
            ready_url = f"{server.base_url}/readyz"
            async with httpx.AsyncClient(timeout=60) as client:

                async def post() -> httpx.Response:
                    return await client.post(url, json={"n": 0}, headers=headers)

                assert (await post()).status_code == 201
                assert (await _eventually(lambda: client.get(ready_url), 200)).status_code == 200
                accepted_before = proxy.accepted
                proxy.silence()
                one_by_one = [await post() for _ in range(2)]
                together = await asyncio.gather(*(post() for _ in range(8)))
                not_ready = await client.get(ready_url)
                accepted_while_silent = proxy.accepted - accepted_before
                proxy.restore()

                healed = await _eventually(post, 201)
                ready = await _eventually(lambda: client.get(ready_url), 200)
                async with aconnect_sse(
                    client, "GET", f"{server.base_url}/v1/stream{channel}", headers=headers
                ) as source:
                    live = await publish(client, server.base_url, server.token(), channel, {})
                    async with asyncio.timeout(HEAL_S):
                        delivered = await anext(dispatched(source))
    refused = [*one_by_one, *together]
    assert {response.status_code for response in refused} == {503}
    for response in refused:
        assert response.json()["error"] == "engine_unavailable"
        assert response.headers["Retry-After"] == "1"
        _names_no_address(response, proxy.port)
    assert accepted_while_silent > 0  # new connections too were accepted and left unanswered
    assert not_ready.status_code == 503, not_ready.text
    assert not_ready.json()["error"] == "not_ready"
    _names_no_address(not_ready, proxy.port)
    assert any("Redis failed" in line and str(proxy.port) in line for line in server.output)
    assert healed.status_code == 201, healed.text
    assert ready.status_code == 200, ready.text
    assert delivered.id == str(live["replayId"])


async def test_a_live_feed_whose_connection_dies_silently_reconnects_and_misses_nothing() -> None:
    """Every connection open to Redis dies without a reset (nothing arrives, nothing closes),
    while new ones work. Publishes on a dead connection end in 503 and the next ones succeed;
    the node's pub/sub connection, idle or not, is found silent by its pings and replaced, and
    the subscriber gets every acknowledged event, in order."""
    with running_redis() as redis, tcp_proxy(redis.port) as proxy:
        env = {"REPLAYBUS_REDIS_URL": f"redis://127.0.0.1:{proxy.port}/0", **REDIS_FAULT_TIMEOUTS}
        with run_server(env) as server:
            headers = {"Authorization": f"Bearer {server.token()}"}
            channel = channel_name()
            url = f"{server.base_url}/v1/events{channel}"
            async with (
                httpx.AsyncClient(timeout=60) as client,
                aconnect_sse(
                    client, "GET", f"{server.base_url}/v1/stream{channel}", headers=headers
                ) as source,
            ):
                events = dispatched(source)
                first = await publish(client, server.base_url, server.token(), channel, {})
                async with asyncio.timeout(HEAL_S):
                    assert (await anext(events)).id == str(first["replayId"])
                proxy.black_hole()
                acknowledged: list[int] = []
                statuses: list[int] = []
                while len(acknowledged) < 3:
                    response = await client.post(url, json={}, headers=headers)
                    statuses.append(response.status_code)
                    if response.status_code == 201:
                        acknowledged.append(response.json()["replayId"])
                    assert len(statuses) < 100, statuses
                received: list[int] = []
                async with asyncio.timeout(HEAL_S):
                    while len(received) < len(acknowledged):
                        received.append(int((await anext(events)).id))
    assert set(statuses) <= {201, 503}
    assert received == acknowledged
    assert any("went unanswered" in line for line in server.output)  # found by its pings
