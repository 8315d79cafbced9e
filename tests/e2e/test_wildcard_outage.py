"""A wildcard SSE stream across a lost pub/sub connection: a node whose connection to Redis is cut,
or dies without a reset, while another node goes on publishing. A wildcard stream is live-only, so
it may miss what was published meanwhile, but never silently: every published event either
reaches it or lies behind an `event: gap` that comes before its next delivered event."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field

import httpx
import orjson
from httpx_sse import aconnect_sse

from tests.e2e.server import REDIS_FAULT_TIMEOUTS, RunningServer, run_server
from tests.e2e.sse import channel_name, dispatched, publish
from tests.harness.redis import running_redis
from tests.harness.tcp_proxy import TcpProxy, tcp_proxy

#: Events published while the subscriber's node cannot hear them.
DURING = 5
#: Two channels, so the stream follows its pattern, not one channel.
CHANNELS = 2
GAP = "gap"


@dataclass(frozen=True)
class Nodes:
    subscriber: RunningServer  # reaches Redis through the proxy
    publisher: RunningServer  # reaches Redis directly
    proxy: TcpProxy


@contextmanager
def nodes(signing_key_pem: str) -> Iterator[Nodes]:
    with running_redis() as redis, tcp_proxy(redis.port) as proxy:
        shared = {"REPLAYBUS_SIGNING_KEY": signing_key_pem, **REDIS_FAULT_TIMEOUTS}
        proxied = {**shared, "REPLAYBUS_REDIS_URL": f"redis://127.0.0.1:{proxy.port}/0"}
        with (
            run_server(proxied) as subscriber,
            run_server({**shared, "REPLAYBUS_REDIS_URL": redis.url}) as publisher,
        ):
            yield Nodes(subscriber, publisher, proxy)


@dataclass
class Wildcard:
    """What one wildcard stream dispatched, in order: ReplayIds, and GAP for each gap event."""

    received: list[int | str] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def until_delivered(self, replay_id: int, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while replay_id not in self.received:
                    self.arrived.clear()
                    await self.arrived.wait()
        return replay_id in self.received


@asynccontextmanager
async def wildcard(
    client: httpx.AsyncClient, node: RunningServer, token: str, pattern: str = "/event/**"
) -> AsyncIterator[Wildcard]:
    stream = Wildcard()
    async with aconnect_sse(
        client,
        "GET",
        f"{node.base_url}/v1/stream{pattern}",
        headers={"Authorization": f"Bearer {token}"},
    ) as source:
        assert source.response.status_code == 200, await source.response.aread()

        async def read() -> None:
            async for message in dispatched(source):
                if message.event == GAP:
                    assert orjson.loads(message.data)["channels"] == pattern
                    stream.received.append(GAP)
                else:
                    stream.received.append(int(message.id))
                stream.arrived.set()

        reader = asyncio.create_task(read())
        try:
            yield stream
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


def silently_missed(published: list[int], received: list[int | str]) -> list[int]:
    """The published events (in publish order) that `received` neither delivered nor covered
    with a gap between the delivered events published just before and just after them."""
    order = {replay_id: index for index, replay_id in enumerate(published)}
    delivered = [(at, order[item]) for at, item in enumerate(received) if item in order]
    gaps = [at for at, item in enumerate(received) if item == GAP]
    silent = []
    for replay_id in published:
        if replay_id in received:
            continue
        index = order[replay_id]
        after = max((at for at, i in delivered if i < index), default=-1)
        before = min((at for at, i in delivered if i > index), default=len(received))
        if not any(after < at < before for at in gaps):
            silent.append(replay_id)
    return silent


async def across(
    signing_key_pem: str, lose: Callable[[TcpProxy], None], heal: Callable[[TcpProxy], None]
) -> tuple[list[int], list[int | str]]:
    """A wildcard stream on the subscriber node; `lose` its Redis connections, publish DURING
    events on the publisher node, `heal`, then publish until the stream delivers again. What
    was published, and what the stream dispatched."""
    with nodes(signing_key_pem) as pair:
        token = pair.publisher.token()
        channels = [channel_name() for _ in range(CHANNELS)]
        published: list[int] = []
        async with httpx.AsyncClient(timeout=30) as client:

            async def publish_one() -> int:
                channel = channels[len(published) % CHANNELS]
                ack = await publish(client, pair.publisher.base_url, token, channel, {})
                published.append(ack["replayId"])
                return int(ack["replayId"])

            async with wildcard(client, pair.subscriber, token) as stream:
                assert await stream.until_delivered(await publish_one(), 5)
                lose(pair.proxy)
                for _ in range(DURING):
                    await publish_one()
                heal(pair.proxy)
                # Until the node hears Redis again, its stream may miss what is published.
                async with asyncio.timeout(8):
                    while not await stream.until_delivered(await publish_one(), 0.5):
                        pass
    return published, stream.received


async def test_a_wildcard_stream_across_a_cut_connection_misses_nothing_without_a_gap(
    signing_key_pem: str,
) -> None:
    published, received = await across(signing_key_pem, TcpProxy.cut, TcpProxy.restore)

    assert silently_missed(published, received) == []
    assert GAP in received, received  # the outage was reported
    assert received[0] == published[0]
    assert received[-1] == published[-1]


async def test_a_wildcard_stream_across_a_dead_silent_connection_misses_nothing_without_a_gap(
    signing_key_pem: str,
) -> None:
    """The connection carries nothing more and never closes: the node finds it out by its
    pings and replaces it (new connections get through)."""
    published, received = await across(signing_key_pem, TcpProxy.black_hole, lambda _: None)

    assert silently_missed(published, received) == []
    assert GAP in received, received
    assert received[0] == published[0]
    assert received[-1] == published[-1]


async def _failed_reconnects(node: RunningServer, count: int) -> None:
    """Until the node has logged `count` failed reconnects of its live feed."""
    for _ in range(800):
        if sum("could not reconnect yet" in line for line in node.output) >= count:
            return
        await asyncio.sleep(0.01)  # another process's state: nothing to await but it
    raise AssertionError(f"the node did not fail to reconnect {count} times: {node.output}")


async def test_a_wildcard_stream_opened_while_its_node_reconnects_misses_nothing_without_a_gap(
    signing_key_pem: str,
) -> None:
    """A second wildcard stream of the tenant opens once Redis is back but while the node still
    waits out its reconnect backoff: the node serves it at once from the subscription it holds
    for the first, so it too must hear of what it missed before the node hears Redis again."""
    with nodes(signing_key_pem) as pair:
        token = pair.publisher.token()
        channel = channel_name()
        published: list[int] = []
        async with httpx.AsyncClient(timeout=30) as client:

            async def publish_one() -> int:
                ack = await publish(client, pair.publisher.base_url, token, channel, {})
                published.append(ack["replayId"])
                return int(ack["replayId"])

            async with wildcard(client, pair.subscriber, token) as first:
                assert await first.until_delivered(await publish_one(), 5)
                pair.proxy.cut()
                # Five failures (after 0.1 + 0.2 + 0.4 + 0.8 + 1.6 s): the next wait is 3.2 s,
                # room enough on a busy machine to open a stream and ask /readyz within it.
                await _failed_reconnects(pair.subscriber, 5)
                pair.proxy.restore()
                async with wildcard(client, pair.subscriber, token, "/event/*") as second:
                    opened_at = len(published)
                    live = await client.get(f"{pair.subscriber.base_url}/readyz")
                    for _ in range(DURING):
                        await publish_one()
                    async with asyncio.timeout(8):
                        while not await second.until_delivered(await publish_one(), 0.5):
                            pass

    assert live.status_code == 503, live.text  # it opened while the live feed was down
    assert silently_missed(published[opened_at:], second.received) == []
    assert GAP in second.received, second.received
    assert silently_missed(published, first.received) == []
