"""Rehearsed Redis faults: connections cut during publishing, and a Redis restart with AOF."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from httpx_sse import aconnect_sse

from tests.e2e.server import run_server
from tests.e2e.sse import channel_name, dispatched, publish
from tests.harness.redis import running_redis
from tests.harness.tcp_proxy import tcp_proxy

EVENTS = 300


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
                    if number == EVENTS // 2:
                        proxy.restore()
                    response = await client.post(url, json={"n": number}, headers=headers)
                    statuses.add(response.status_code)
                    if response.status_code == 201:
                        acknowledged.append(response.json()["replayId"])
                    else:
                        assert response.json()["error"] == "engine_unavailable"
                received: list[int] = []
                events = dispatched(source)
                async with asyncio.timeout(30):
                    while not set(acknowledged) <= set(received):
                        received.append(int((await anext(events)).id))
                history = (await client.get(url, params={"limit": 1000}, headers=headers)).json()
    stored = [event["replayId"] for event in history["events"]]
    assert statuses == {201, 503}
    assert set(acknowledged) <= set(stored)
    assert received == sorted(set(received))  # in order, no duplicates
    assert set(received) <= set(stored)


async def test_events_and_replay_ids_survive_a_redis_restart_with_aof(tmp_path: Path) -> None:
    aof = ["--appendonly", "yes", "--appendfsync", "always"]
    with running_redis(aof, directory=tmp_path) as redis:
        port = redis.port
        with run_server({"REPLAYBUS_REDIS_URL": redis.url}) as server:
            token = server.token()
            channel = channel_name()
            async with httpx.AsyncClient(timeout=30) as client:
                before = [
                    (await publish(client, server.base_url, token, channel, {"n": n}))["replayId"]
                    for n in range(20)
                ]
    with (
        running_redis(aof, port=port, directory=tmp_path) as redis,
        run_server({"REPLAYBUS_REDIS_URL": redis.url}) as server,
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
