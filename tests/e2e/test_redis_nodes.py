"""Several replaybus nodes (and worker processes) on one Redis: any node serves any request."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from httpx_sse import aconnect_sse

from tests.e2e.server import RunningServer, run_server
from tests.e2e.sse import channel_name, dispatched, publish
from tests.harness.redis import RunningRedis


@pytest.fixture(scope="module")
def nodes(redis_server: RunningRedis, signing_key_pem: str) -> Iterator[list[RunningServer]]:
    shared = {"REPLAYBUS_REDIS_URL": redis_server.url, "REPLAYBUS_SIGNING_KEY": signing_key_pem}
    with (
        run_server({**shared, "REPLAYBUS_WORKERS": "2"}) as first,
        run_server(shared) as second,
    ):
        yield [first, second]


async def test_a_token_from_one_node_works_on_every_node_and_worker(
    nodes: list[RunningServer],
) -> None:
    token = nodes[0].token()
    async with httpx.AsyncClient() as client:
        for node in nodes:
            for _ in range(4):  # several requests, so both workers of the first node answer
                response = await client.get(
                    f"{node.base_url}/v1/channels{channel_name()}",
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert response.status_code == 200


async def test_events_published_on_one_node_stream_from_another(
    nodes: list[RunningServer],
) -> None:
    first, second = nodes
    token = first.token()
    channel = channel_name()
    async with httpx.AsyncClient(timeout=30) as client:
        old = [await publish(client, first.base_url, token, channel, {"n": n}) for n in range(3)]
        async with aconnect_sse(
            client,
            "GET",
            f"{second.base_url}/v1/stream{channel}?replayId=-2",
            headers={"Authorization": f"Bearer {token}"},
        ) as source:
            events = dispatched(source)
            got = [int((await anext(events)).id) for _ in range(3)]
            live = await publish(client, first.base_url, token, channel, {"n": 3})
            got.append(int((await anext(events)).id))
    assert got == [ack["replayId"] for ack in [*old, live]]


async def test_a_bayeux_session_moves_between_nodes(nodes: list[RunningServer]) -> None:
    first, second = nodes
    token = first.token()
    channel = channel_name()
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as client:
        handshake = await client.post(
            first.base_url + "/cometd/58.0", json=[{"channel": "/meta/handshake"}]
        )
        client_id = handshake.json()[0]["clientId"]
        connect = {
            "channel": "/meta/connect",
            "clientId": client_id,
            "connectionType": "long-polling",
        }
        subscribe = {"channel": "/meta/subscribe", "clientId": client_id, "subscription": channel}
        replies = await client.post(second.base_url + "/cometd/58.0", json=[connect, subscribe])
        assert [r["successful"] for r in replies.json()] == [True, True]

        held = asyncio.create_task(client.post(first.base_url + "/cometd/58.0", json=[connect]))
        published = await publish(client, second.base_url, token, channel, {"n": 1})
        delivered = (await held).json()
        follow_up = await client.post(
            second.base_url + "/cometd/58.0", json=[{**connect, "advice": {"timeout": 0}}]
        )
    assert [m["data"]["event"]["replayId"] for m in delivered if "data" in m] == [
        published["replayId"]
    ]
    assert [m for m in follow_up.json() if "data" in m] == []
