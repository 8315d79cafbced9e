"""Caps on the SSE streams one worker holds: per client (429 `too_many_subscribers`, overridable
per tenant with `maxStreamsPerClient`) and in all (503 `overloaded` with a Retry-After). A
refused stream holds nothing, and a place frees up as soon as a stream ends."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

from tests.api._support import hold_stream, running_node

ORDER = "/event/Order__e"
ALL = ["publish", "subscribe"]


async def test_one_client_beyond_its_stream_cap_is_refused_until_one_ends() -> None:
    async with running_node(sse_max_streams_per_client=2) as node:
        await node.create_tenant("acme")
        token = await node.client_token("acme", ALL)
        other = await node.client_token("acme", ALL)

        async with AsyncExitStack() as open_streams:
            for _ in range(2):
                held = await open_streams.enter_async_context(hold_stream(node, token, ORDER))
                assert held.status == 200
            assert await node.stream_status(token, ORDER) == (429, "too_many_subscribers")
            async with hold_stream(node, token, ORDER) as refused:
                assert refused.headers["retry-after"].isdigit()
            # Another client of the same tenant has its own count.
            assert await node.stream_status(other, ORDER) == (200, "")

        assert await node.stream_status(token, ORDER) == (200, "")


async def test_a_tenant_setting_overrides_the_per_client_cap() -> None:
    async with running_node(sse_max_streams_per_client=1) as node:
        await node.create_tenant("acme", {"maxStreamsPerClient": 2})
        await node.create_tenant("globex")
        acme = await node.client_token("acme", ALL)
        globex = await node.client_token("globex", ALL)

        async with (
            hold_stream(node, acme, ORDER) as first,
            hold_stream(node, acme, ORDER) as second,
            hold_stream(node, globex, ORDER) as theirs,
        ):
            assert (first.status, second.status, theirs.status) == (200, 200, 200)
            assert await node.stream_status(acme, ORDER) == (429, "too_many_subscribers")
            assert await node.stream_status(globex, ORDER) == (429, "too_many_subscribers")


async def test_streams_beyond_the_workers_cap_get_503_with_retry_after() -> None:
    async with running_node(sse_max_streams=2) as node:
        await node.create_tenant("acme")
        await node.create_tenant("globex")
        acme = await node.client_token("acme", ALL)
        globex = await node.client_token("globex", ALL)

        async with hold_stream(node, acme, ORDER), hold_stream(node, globex, ORDER):
            async with hold_stream(node, globex, "/event/Other__e") as refused:
                assert (refused.status, refused.error) == (503, "overloaded")
                assert int(refused.headers["retry-after"]) >= 1
            # A refusal for the per-client cap or the worker's leaves nothing counted.
            assert await node.stream_status(acme, ORDER) == (503, "overloaded")

        assert await node.stream_status(acme, ORDER) == (200, "")


async def test_streams_ending_together_release_their_leases_a_few_at_a_time() -> None:
    """Thousands of streams dropped at once must not queue every other store call behind their
    lease releases: at most eight run at once, and every lease is released."""
    async with running_node() as node:
        await node.create_tenant("acme")
        token = await node.client_token("acme", ALL)
        engine = node.app.state.services.engine
        release = engine.stream_release
        in_flight, most, released = 0, 0, 0

        async def counted_release(tenant: str, stream_id: str) -> None:
            nonlocal in_flight, most, released
            in_flight += 1
            most = max(most, in_flight)
            for _ in range(20):  # a store call's round trip, in which others may start
                await asyncio.sleep(0)
            await release(tenant, stream_id)
            in_flight -= 1
            released += 1

        engine.stream_release = counted_release
        all_open, leave = asyncio.Barrier(41), asyncio.Event()

        async def one_stream() -> None:
            async with hold_stream(node, token, ORDER) as held:
                assert held.status == 200
                await all_open.wait()
                await leave.wait()

        streams = [asyncio.create_task(one_stream()) for _ in range(40)]
        await all_open.wait()
        leave.set()
        await asyncio.gather(*streams)

    assert (released, most) == (40, 8)
