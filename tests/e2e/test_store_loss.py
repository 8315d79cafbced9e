"""A Redis that lost its data (FLUSHALL, a restart without persistence) under a running node:
every position handed out before the loss is reported as a gap on SSE, in history and on a
Bayeux subscribe, while a position handed out with nothing lost still resumes exactly."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
from aiosfstream_ng.exceptions import ServerError
from aiosfstream_ng.replay import ReplayMarker
from httpx_sse import aconnect_sse

from tests.e2e.bayeux_publish import invalid_replay_id_error
from tests.e2e.bayeux_python import ClientCredentials, StreamingClient
from tests.e2e.server import RunningServer, run_server
from tests.e2e.sse import channel_name, dispatched, publish
from tests.harness.redis import RunningRedis, running_redis

DEADLINE_S = 20.0


@contextlib.contextmanager
def node_on(store: RunningRedis, signing_key_pem: str) -> Iterator[RunningServer]:
    with run_server(
        {
            "REPLAYBUS_REDIS_URL": store.url,
            "REPLAYBUS_SIGNING_KEY": signing_key_pem,
            "REPLAYBUS_REDIS_COMMAND_TIMEOUT": "2",
        }
    ) as node:
        yield node


async def opening_position(client: httpx.AsyncClient, node: RunningServer, channel: str) -> int:
    """The position a new-events-only SSE subscriber is given when its stream opens."""
    url = f"{node.base_url}/v1/stream{channel}?replayId=-1"
    async with aconnect_sse(client, "GET", url) as source:
        async for message in source.aiter_sse():
            if message.id:
                return int(message.id)
    raise AssertionError("the stream ended without an id")


async def resumed(
    client: httpx.AsyncClient, node: RunningServer, channel: str, position: int
) -> list[tuple[str, Any]]:
    """What an SSE stream resuming from `position` dispatches, up to its first event: (event
    name, replayId) for events, ("gap", its data) for gaps."""
    headers = {"Last-Event-ID": str(position)}
    got: list[tuple[str, Any]] = []
    url = f"{node.base_url}/v1/stream{channel}"
    async with (
        asyncio.timeout(DEADLINE_S),
        aconnect_sse(client, "GET", url, headers=headers) as source,
    ):
        async for message in dispatched(source):
            if message.event == "gap":
                got.append(("gap", message.json()))
            else:
                got.append((message.event, int(message.id)))
                break
    return got


async def publish_when_back(
    client: httpx.AsyncClient, node: RunningServer, token: str, channel: str
) -> int:
    """A publish, sent again while the node's connection to Redis comes back (a 503 here
    stored nothing: the store it would have gone to was down)."""
    async with asyncio.timeout(DEADLINE_S):
        while True:
            response = await client.post(f"{node.base_url}/v1/events{channel}", json={"n": 3})
            if response.status_code == 201:
                replay_id: int = response.json()["replayId"]
                return replay_id
            assert response.status_code == 503, response.text
            await asyncio.sleep(0.05)  # the node reconnects on its own schedule


async def bayeux_subscribe_error(node: RunningServer, channel: str, position: int) -> str:
    marker = ReplayMarker(date="2026-01-01T00:00:00.000Z", replay_id=position)
    async with (
        asyncio.timeout(DEADLINE_S),
        StreamingClient(ClientCredentials(node), replay={channel: marker}) as bayeux,
    ):
        with pytest.raises(ServerError) as raised:
            await bayeux.subscribe(channel)
    reply = raised.value.response
    assert reply is not None
    error: str = reply["error"]
    return error


Loss = Callable[[contextlib.ExitStack, RunningRedis], None]


async def check_every_older_position_is_a_gap(signing_key_pem: str, lose: Loss) -> None:
    with contextlib.ExitStack() as stack:
        store = stack.enter_context(running_redis())
        node = stack.enter_context(node_on(store, signing_key_pem))
        token = node.token()
        channel, quiet = channel_name(), channel_name()
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(timeout=DEADLINE_S, headers=headers) as client:
            acks = [await publish(client, node.base_url, token, channel, {"n": n}) for n in (1, 2)]
            position = acks[-1]["replayId"]
            # Nothing lost yet: the position an empty channel hands out resumes exactly.
            opening = await opening_position(client, node, quiet)
            first = await publish(client, node.base_url, token, quiet, {"n": 1})
            assert await resumed(client, node, quiet, opening) == [("message", first["replayId"])]

            lose(stack, store)
            after = await publish_when_back(client, node, token, channel)

            assert after > position
            sse = await resumed(client, node, channel, position)
            history = (
                await client.get(f"{node.base_url}/v1/events{channel}?after={position}")
            ).json()
            bayeux = await bayeux_subscribe_error(node, channel, position)

    assert [name for name, _ in sse] == ["gap", "message"]
    assert sse[0][1]["requested"] == position
    assert sse[1] == ("message", after)
    assert history["gap"]["requested"] == position
    assert [event["replayId"] for event in history["events"]] == [after]
    assert bayeux == invalid_replay_id_error(position)


def flush_all(stack: contextlib.ExitStack, store: RunningRedis) -> None:
    with redis.Redis(host="127.0.0.1", port=store.port, socket_timeout=10) as raw:
        raw.flushall()


def restart_without_persistence(stack: contextlib.ExitStack, store: RunningRedis) -> None:
    store.process.kill()
    store.process.wait()
    stack.enter_context(running_redis(port=store.port, directory=store.directory))


async def test_after_flushall_every_older_position_is_reported_as_a_gap(
    signing_key_pem: str,
) -> None:
    await check_every_older_position_is_a_gap(signing_key_pem, flush_all)


async def test_after_a_restart_without_persistence_every_older_position_is_a_gap(
    signing_key_pem: str,
) -> None:
    await check_every_older_position_is_a_gap(signing_key_pem, restart_without_persistence)
