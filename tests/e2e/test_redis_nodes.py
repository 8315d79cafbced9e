"""Several replaybus nodes (and worker processes) on one Redis: any node serves any request."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from httpx_sse import aconnect_sse

from tests.e2e.bayeux_publish import invalid_replay_id_error, keep_newest
from tests.e2e.server import RunningServer, run_server
from tests.e2e.sse import channel_name, dispatched, publish
from tests.harness.redis import RunningCluster, RunningRedis


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


async def test_a_session_that_fell_out_of_retention_ends_on_every_node(
    nodes: list[RunningServer],
) -> None:
    """Handshaken on one node, its position evicted, then connecting to the other node: that
    connect ends the session, and the node it was handshaken on no longer knows the client."""
    first, second = nodes  # the second has one worker, so its catalog can be administered
    token = first.token()
    channel = channel_name()
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as client:
        await keep_newest(client, second.base_url, token, channel, 3)
        seen = await publish(client, second.base_url, token, channel, {"n": 0})
        handshake = await client.post(
            second.base_url + "/cometd/58.0", json=[{"channel": "/meta/handshake"}]
        )
        client_id = handshake.json()[0]["clientId"]
        connect = {
            "channel": "/meta/connect",
            "clientId": client_id,
            "connectionType": "long-polling",
        }
        subscribe = {
            "channel": "/meta/subscribe",
            "clientId": client_id,
            "subscription": channel,
            "ext": {"replay": {channel: seen["replayId"]}},
        }
        replies = await client.post(second.base_url + "/cometd/58.0", json=[connect, subscribe])
        assert [r["successful"] for r in replies.json()] == [True, True]
        for n in range(4):  # evicts `seen` and the first of these
            await publish(client, second.base_url, token, channel, {"n": n})

        [ended] = (await client.post(first.base_url + "/cometd/58.0", json=[connect])).json()
        [after] = (await client.post(second.base_url + "/cometd/58.0", json=[connect])).json()

    assert ended["successful"] is False
    assert ended["error"] == invalid_replay_id_error(seen["replayId"])
    assert ended["advice"] == {"reconnect": "none", "interval": 0}
    assert after["error"] == "403::Unknown client"


def _messages(channel_list: list[dict[str, object]]) -> list[dict[str, object]]:
    return [message for message in channel_list if "data" in message]


async def _bayeux_client(
    client: httpx.AsyncClient, node: RunningServer, channel: str
) -> dict[str, object]:
    handshake = await client.post(
        node.base_url + "/cometd/58.0", json=[{"channel": "/meta/handshake"}]
    )
    client_id = handshake.json()[0]["clientId"]
    connect = {"channel": "/meta/connect", "clientId": client_id, "connectionType": "long-polling"}
    subscribe = {"channel": "/meta/subscribe", "clientId": client_id, "subscription": channel}
    first = await client.post(node.base_url + "/cometd/58.0", json=[connect, subscribe])
    assert [r["successful"] for r in first.json()] == [True, True]
    return connect


async def test_a_newer_connect_on_another_node_completes_the_held_one_without_events(
    nodes: list[RunningServer],
) -> None:
    holder, other = nodes[1], nodes[0]
    token = holder.token()
    channel = channel_name()
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as client:
        connect = await _bayeux_client(client, holder, channel)
        held = asyncio.create_task(client.post(holder.base_url + "/cometd/58.0", json=[connect]))
        await holder.wait_for_held_connects(1)
        newer = asyncio.create_task(client.post(other.base_url + "/cometd/58.0", json=[connect]))
        superseded = (await held).json()
        published = await publish(client, other.base_url, token, channel, {"n": 1})
        delivered = (await newer).json()
    assert _messages(superseded) == []
    assert [m["data"]["event"]["replayId"] for m in _messages(delivered)] == [  # type: ignore[index]
        published["replayId"]
    ]


async def test_a_subscribe_on_another_node_wakes_the_held_connect(
    nodes: list[RunningServer],
) -> None:
    holder, other = nodes[1], nodes[0]
    token = holder.token()
    channel, added = channel_name(), channel_name()
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as client:
        connect = await _bayeux_client(client, holder, channel)
        held = asyncio.create_task(client.post(holder.base_url + "/cometd/58.0", json=[connect]))
        await holder.wait_for_held_connects(1)
        subscribe = {
            "channel": "/meta/subscribe",
            "clientId": connect["clientId"],
            "subscription": added,
        }
        reply = await client.post(other.base_url + "/cometd/58.0", json=[subscribe])
        async with asyncio.timeout(10):
            woken = (await held).json()
    assert reply.json()[0]["successful"] is True
    assert woken[-1]["successful"] is True


async def test_a_disconnect_on_another_node_releases_the_held_connect(
    nodes: list[RunningServer],
) -> None:
    holder, other = nodes[1], nodes[0]
    headers = {"Authorization": f"Bearer {holder.token()}"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as client:
        connect = await _bayeux_client(client, holder, channel_name())
        held = asyncio.create_task(client.post(holder.base_url + "/cometd/58.0", json=[connect]))
        await holder.wait_for_held_connects(1)
        disconnect = {"channel": "/meta/disconnect", "clientId": connect["clientId"]}
        await client.post(other.base_url + "/cometd/58.0", json=[disconnect])
        async with asyncio.timeout(10):
            released = (await held).json()
    assert released[-1]["advice"]["reconnect"] == "none"


async def test_a_node_on_a_redis_cluster_streams_channels_of_every_master(
    redis_cluster: RunningCluster,
) -> None:
    env = {"REPLAYBUS_REDIS_URL": redis_cluster.url, "REPLAYBUS_REDIS_CLUSTER": "true"}
    with run_server(env) as node:
        token = node.token()
        channels = [channel_name() for _ in range(6)]  # several slots, so several masters
        async with httpx.AsyncClient(timeout=30) as client:
            streams = [
                aconnect_sse(
                    client,
                    "GET",
                    f"{node.base_url}/v1/stream{channel}",
                    headers={"Authorization": f"Bearer {token}"},
                )
                for channel in channels
            ]
            sources = [await stream.__aenter__() for stream in streams]
            try:
                acks = [
                    (await publish(client, node.base_url, token, channel, {"n": 1}))["replayId"]
                    for channel in channels
                ]
                received = [int((await anext(dispatched(source))).id) for source in sources]
            finally:
                for stream in streams:
                    await stream.__aexit__(None, None, None)
    assert received == acks
