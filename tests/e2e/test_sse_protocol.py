"""SSE wire details: heartbeats and which position wins."""

from __future__ import annotations

import httpx
from httpx_sse import aconnect_sse

from tests.e2e.server import run_server
from tests.e2e.sse import channel_name, dispatched, publish


async def test_idle_stream_sends_heartbeat_comments() -> None:
    with run_server({"REPLAYBUS_SSE_HEARTBEAT": "100ms"}) as server:
        token = server.token()
        async with (
            httpx.AsyncClient(timeout=30) as client,
            client.stream(
                "GET",
                f"{server.base_url}/v1/stream{channel_name()}",
                headers={"Authorization": f"Bearer {token}"},
            ) as response,
        ):
            lines = response.aiter_lines()
            assert await anext(lines) == "retry: 2000"
            assert await anext(lines) == ""
            assert await anext(lines) == ": heartbeat"
            assert await anext(lines) == ""
            assert await anext(lines) == ": heartbeat"


async def test_last_event_id_wins_over_the_replay_id_parameter() -> None:
    with run_server() as server:
        token = server.token()
        channel = channel_name()
        async with httpx.AsyncClient(timeout=30) as client:
            ids = [
                (await publish(client, server.base_url, token, channel, {"n": n}))["replayId"]
                for n in range(3)
            ]
            async with aconnect_sse(
                client,
                "GET",
                f"{server.base_url}/v1/stream{channel}?replayId=-2",
                headers={"Authorization": f"Bearer {token}", "Last-Event-ID": str(ids[1])},
            ) as source:
                first = await anext(dispatched(source))
    assert int(first.id) == ids[2]
