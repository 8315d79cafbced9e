"""SSE end to end against a real server: read while publishing, cut, resume by Last-Event-ID."""

from __future__ import annotations

import asyncio

import httpx
from httpx_sse import aconnect_sse

from tests.e2e.server import RunningServer, run_server
from tests.e2e.sse import channel_name, dispatched, publish

TOTAL = 1000
CUT_AFTER = 500


async def test_reconnect_with_last_event_id_resumes_exactly_after_the_cut(
    server: RunningServer, token: str
) -> None:
    channel = channel_name()
    stream_url = f"{server.base_url}/v1/stream{channel}"
    headers = {"Authorization": f"Bearer {token}"}
    published: list[int] = []

    async with httpx.AsyncClient(timeout=30) as client:

        async def publisher() -> None:
            for number in range(TOTAL):
                result = await publish(client, server.base_url, token, channel, {"n": number})
                published.append(result["replayId"])

        first: list[int] = []
        async with aconnect_sse(client, "GET", stream_url, headers=headers) as source:
            # The response has started, so the subscription is in place: publish now.
            publishing = asyncio.create_task(publisher())
            async for message in dispatched(source):
                assert message.event == "message"
                first.append(int(message.id))
                if len(first) == CUT_AFTER:
                    break
        # The connection is closed here while publishing goes on.
        last_seen = str(first[-1])

        second: list[int] = []
        resume_headers = {**headers, "Last-Event-ID": last_seen}
        async with aconnect_sse(client, "GET", stream_url, headers=resume_headers) as source:
            async for message in dispatched(source):
                second.append(int(message.id))
                if len(second) == TOTAL - CUT_AFTER:
                    break
        await publishing

    assert first == published[:CUT_AFTER]
    assert second == published[CUT_AFTER:]
    assert sorted(published) == published
    assert len(set(published)) == TOTAL


async def test_payloads_and_envelope_arrive_as_published(server: RunningServer, token: str) -> None:
    channel = channel_name()
    async with httpx.AsyncClient(timeout=30) as client:
        acks = [
            await publish(client, server.base_url, token, channel, {"n": n, "text": "é\nx"})
            for n in range(3)
        ]
        async with aconnect_sse(
            client,
            "GET",
            f"{server.base_url}/v1/stream{channel}?replayId=-2",
            headers={"Authorization": f"Bearer {token}"},
        ) as source:
            received = []
            async for message in dispatched(source):
                received.append(message.json())
                if len(received) == 3:
                    break
    for ack, envelope, n in zip(acks, received, range(3), strict=True):
        assert envelope == {
            "channel": channel,
            "replayId": ack["replayId"],
            "uuid": ack["uuid"],
            "createdDate": ack["createdDate"],
            "schema": None,
            "payload": {"n": n, "text": "é\nx"},
        }


async def test_resume_below_low_water_mark_sends_gap_then_oldest_retained() -> None:
    with run_server({"REPLAYBUS_RETENTION_MAX_COUNT": "5"}) as small:
        token = small.token()
        channel = channel_name()
        async with httpx.AsyncClient(timeout=30) as client:
            ids = [
                (await publish(client, small.base_url, token, channel, {"n": n}))["replayId"]
                for n in range(10)
            ]
            events = []
            async with aconnect_sse(
                client,
                "GET",
                f"{small.base_url}/v1/stream{channel}",
                headers={"Authorization": f"Bearer {token}", "Last-Event-ID": str(ids[1])},
            ) as source:
                async for message in dispatched(source):
                    events.append(message)
                    if len(events) == 6:
                        break
    gap, *rest = events
    assert gap.event == "gap"
    assert gap.json() == {"requested": ids[1], "earliest": ids[5], "latest": ids[9]}
    assert [int(m.id) for m in rest] == ids[5:]
    assert all(m.event == "message" for m in rest)


async def test_stream_query_token_and_replay_id(server: RunningServer, token: str) -> None:
    channel = channel_name()
    async with httpx.AsyncClient(timeout=30) as client:
        ids = [
            (await publish(client, server.base_url, token, channel, {"n": n}))["replayId"]
            for n in range(4)
        ]
        url = f"{server.base_url}/v1/stream{channel}?replayId={ids[1]}&access_token={token}"
        got: list[int] = []
        async with aconnect_sse(client, "GET", url) as source:
            assert source.response.headers["cache-control"] == "no-store"
            assert source.response.headers["x-accel-buffering"] == "no"
            assert source.response.headers["content-type"].startswith("text/event-stream")
            async for message in dispatched(source):
                got.append(int(message.id))
                if len(got) == 2:
                    break
    assert got == ids[2:]


async def test_wildcard_stream_delivers_live_events_of_matching_channels(
    server: RunningServer, token: str
) -> None:
    prefix = channel_name().removesuffix("__e")
    async with (
        httpx.AsyncClient(timeout=30) as client,
        aconnect_sse(
            client,
            "GET",
            f"{server.base_url}/v1/stream{prefix}/*",
            headers={"Authorization": f"Bearer {token}"},
        ) as source,
    ):
        await publish(client, server.base_url, token, f"{prefix}/A", {"n": 1})
        await publish(client, server.base_url, token, f"{prefix}/A/deeper", {"n": 2})
        await publish(client, server.base_url, token, f"{prefix}/B", {"n": 3})
        received = []
        async for message in dispatched(source):
            received.append(message.json())
            if len(received) == 2:
                break
    assert [(m["channel"], m["payload"]["n"]) for m in received] == [
        (f"{prefix}/A", 1),
        (f"{prefix}/B", 3),
    ]
