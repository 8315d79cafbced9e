"""SSE wire details: heartbeats and which position wins."""

from __future__ import annotations

import httpx
from httpx_sse import aconnect_sse

from tests.e2e.server import run_server
from tests.e2e.sse import channel_name, dispatched, publish


async def test_idle_stream_sends_heartbeat_comments() -> None:
    settings = {"REPLAYBUS_SSE_HEARTBEAT": "100ms", "REPLAYBUS_RECONNECT_JITTER": "0"}
    with run_server(settings) as server:
        token = server.token()
        channel = channel_name()
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            httpx.AsyncClient(timeout=30) as client,
            client.stream(
                "GET", f"{server.base_url}/v1/stream{channel}", headers=headers
            ) as response,
        ):
            window = (
                await client.get(f"{server.base_url}/v1/channels{channel}", headers=headers)
            ).json()
            lines = response.aiter_lines()
            assert await anext(lines) == "retry: 2000"
            assert await anext(lines) == f"id: {window['latest']}"  # the store's birth mark
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


async def test_new_events_stream_dropped_before_any_event_resumes_without_loss() -> None:
    """The opening `id:` gives even an idle `-1` stream a position to reconnect from."""
    with run_server() as server:
        token = server.token()
        channel = channel_name()
        url = f"{server.base_url}/v1/stream{channel}"
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(timeout=30) as client:
            old = await publish(client, server.base_url, token, channel, {"n": 0})
            async with aconnect_sse(client, "GET", url, headers=headers) as source:
                opening = await anext(source.aiter_sse())
            assert opening.id == str(old["replayId"])
            missed = [
                (await publish(client, server.base_url, token, channel, {"n": n}))["replayId"]
                for n in (1, 2)
            ]
            resume = {**headers, "Last-Event-ID": opening.id}
            async with aconnect_sse(client, "GET", url, headers=resume) as source:
                events = dispatched(source)
                got = [int((await anext(events)).id), int((await anext(events)).id)]
    assert got == missed


async def test_wildcard_reconnect_is_reported_as_a_gap() -> None:
    with run_server() as server:
        token = server.token()
        prefix = channel_name().removesuffix("__e")
        url = f"{server.base_url}/v1/stream{prefix}/*"
        async with httpx.AsyncClient(timeout=30) as client:
            async with aconnect_sse(
                client, "GET", url, headers={"Authorization": f"Bearer {token}"}
            ) as source:
                opening = await anext(source.aiter_sse())
            assert opening.id == "live"
            async with aconnect_sse(
                client,
                "GET",
                url,
                headers={"Authorization": f"Bearer {token}", "Last-Event-ID": opening.id},
            ) as source:
                gap = await anext(dispatched(source))
    assert gap.event == "gap"
    assert gap.json()["requested"] is None
    assert "live-only" in gap.json()["reason"]


async def test_stream_ends_with_a_retry_hint_when_its_token_expires() -> None:
    with run_server({"REPLAYBUS_TOKEN_TTL": "10s", "REPLAYBUS_RECONNECT_JITTER": "0"}) as server:
        token = server.token()
        async with (
            httpx.AsyncClient(timeout=60) as client,
            aconnect_sse(
                client,
                "GET",
                f"{server.base_url}/v1/stream{channel_name()}",
                headers={"Authorization": f"Bearer {token}"},
            ) as source,
        ):
            frames = [message async for message in source.aiter_sse()]
    assert [frame.retry for frame in frames] == [2000, 2000]
