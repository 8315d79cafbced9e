"""Scale-out end to end: three replaybus nodes (two workers each) on one Redis behind a real
nginx doing plain round robin (no stickiness), everything on loopback.

50 SSE and 50 Bayeux subscribers and 5 publishers talk to nginx only. 10 000 events go out in
batches of 50 over 4 channels. Halfway, the publishers stop before their next batch until every
subscriber has everything acknowledged so far (so every Bayeux client holds a long poll, a
third of them on each node); then they resume and one node is killed with SIGKILL (its
supervisor and workers) as their first batches go out. Subscribers on it lose their streams and
long polls and resume as real clients do (SSE: `Last-Event-ID`; Bayeux: a new handshake and
`ext.replay` with the last ReplayId processed); publishers retry failed attempts with the same
`Idempotency-Key`. At the end every subscriber holds every event of its channel in order, a
duplicate only ever being a re-delivery after that subscriber's own reconnect, and the history
holds exactly the acknowledged events: nothing lost, nothing stored twice.

A second test publishes the same load through nginx to one node and to three and prints both
rates (timing claims belong to the benchmark; it asserts correctness only).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import Counter
from dataclasses import dataclass

import httpx
import pytest

from tests.e2e.scale_clients import (
    Deliveries,
    Pause,
    PublishResult,
    bayeux_disconnect,
    bayeux_subscriber,
    history_ids,
    publish_load,
    sse_subscriber,
    violations,
)
from tests.e2e.scale_cluster import (
    KilledNode,
    kill_node,
    node_env,
    running_nodes,
    wait_holding,
    wait_ready,
)
from tests.e2e.server import CLIENT_ID, CLIENT_SECRET, RunningServer
from tests.e2e.sse import channel_name
from tests.harness.nginx import RunningNginx, running_nginx
from tests.harness.redis import RunningRedis

NODES = 3
CHANNELS = 4
EVENTS = 10_000
BATCH = 50
PUBLISHERS = 5
SSE_SUBSCRIBERS = 50
BAYEUX_SUBSCRIBERS = 50
DEADLINE_S = 120.0  # the whole scenario, from the first subscriber to the last check
THROUGHPUT_EVENTS = 10_000  # 5 publishers x 2000


_TLS = ssl.create_default_context()  # unused on plain HTTP; shared so clients start fast


def _client(connections: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(30.0, connect=5.0),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        trust_env=False,
        verify=_TLS,
    )


async def _subscriber(deliveries: Deliveries, base: str, token: str) -> None:
    """One subscriber with its own HTTP client, as separate clients would have (one shared
    pool of a hundred long-lived connections costs httpx more than the streams themselves)."""
    run = sse_subscriber if deliveries.name.startswith("sse") else bayeux_subscriber
    async with _client(4) as http:
        await run(http, base, token, deliveries)


async def _token(client: httpx.AsyncClient, base_url: str) -> str:
    """A token from the token endpoint through the load balancer (any node's verifies)."""
    response = await client.post(
        f"{base_url}/services/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        },
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def _remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


@dataclass
class Outcome:
    published: PublishResult
    killed: KilledNode
    killed_after: int  # events acknowledged when the kill was ordered
    held: int  # Bayeux connects one worker of the victim held just before (probed)
    subscribers: list[Deliveries]
    incomplete: list[str]  # subscribers still missing events at the deadline
    history: dict[str, list[int]]
    crashed: list[str]  # subscriber tasks that failed (a bug in the client, not the server)


async def _catch_up(
    subscribers: list[Deliveries], acknowledged: dict[str, list[int]], deadline: float
) -> dict[str, list[str]]:
    """Wait until every subscriber has every event in `acknowledged` of its channel, or the
    deadline; returns those that have not, with what is wrong with what they received."""
    for d in subscribers:
        d.expect(frozenset(acknowledged[d.channel]))
    waits = {asyncio.create_task(d.complete.wait()): d for d in subscribers}
    _, pending = await asyncio.wait(waits, timeout=_remaining(deadline))
    behind: dict[str, list[str]] = {}
    for waiting in pending:
        waiting.cancel()
        d = waits[waiting]
        found = violations(d, acknowledged[d.channel])
        behind[d.name] = [*found, f"reconnects at {d.reconnects}", f"{d.failures}"]
    return behind


def _subscribers(channels: list[str]) -> list[Deliveries]:
    sse = [Deliveries(f"sse-{n}", channels[n % len(channels)]) for n in range(SSE_SUBSCRIBERS)]
    bayeux = [
        Deliveries(f"bayeux-{n}", channels[n % len(channels)]) for n in range(BAYEUX_SUBSCRIBERS)
    ]
    return sse + bayeux


async def _publish_and_kill(
    http: httpx.AsyncClient,
    base: str,
    token: str,
    channels: list[str],
    subscribers: list[Deliveries],
    victim: RunningServer,
    deadline: float,
) -> tuple[PublishResult, KilledNode, int, int]:
    """Publish the load and SIGKILL `victim` halfway.

    At half the events the publishers stop before their next batch; once every subscriber has
    everything acknowledged so far, every Bayeux client is holding a long poll (a third of them
    on the victim, by round robin) and every stream is idle. Then the publishers resume and the
    victim is killed while their first batches go out, cutting streams, held connects and
    publishes in flight."""
    pause = Pause(EVENTS // 2, PUBLISHERS)
    ledger: dict[str, list[int]] = {}
    publishing = asyncio.create_task(
        publish_load(
            http,
            base,
            token,
            channels,
            events=EVENTS,
            batch_size=BATCH,
            publishers=PUBLISHERS,
            pause=pause,
            ledger=ledger,
        )
    )
    try:
        async with asyncio.timeout(_remaining(deadline)):
            reached = asyncio.create_task(pause.reached.wait())
            await asyncio.wait({reached, publishing}, return_when=asyncio.FIRST_COMPLETED)
            if publishing.done():
                reached.cancel()
                await publishing  # it failed: raise its error
            behind = await _catch_up(subscribers, ledger, deadline)
            assert behind == {}, f"before the kill, subscribers missed events: {behind}"
            held = await asyncio.to_thread(wait_holding, victim)
            pause.resume()
            killed = await asyncio.to_thread(kill_node, victim)
            published = await publishing
    except TimeoutError:
        acknowledged = sum(len(ids) for ids in ledger.values())
        raise AssertionError(
            f"publishing did not finish within the deadline: {acknowledged} of {EVENTS} events "
            f"acknowledged, pause reached: {pause.reached.is_set()}"
        ) from None
    finally:
        pause.resume()
        if not publishing.done():
            publishing.cancel()
    return published, killed, pause.acknowledged_at, held


async def _scenario(
    balancer: RunningNginx, victim: RunningServer, channels: list[str], deadline: float
) -> Outcome:
    base = balancer.base_url
    subscribers = _subscribers(channels)
    async with _client(PUBLISHERS + 5) as publishing:
        token = await _token(publishing, base)
        tasks = [asyncio.create_task(_subscriber(d, base, token), name=d.name) for d in subscribers]
        try:
            async with asyncio.timeout(_remaining(deadline)):
                await asyncio.gather(*(d.subscribed.wait() for d in subscribers))
            published, killed, killed_after, held = await _publish_and_kill(
                publishing, base, token, channels, subscribers, victim, deadline
            )
            behind = await _catch_up(subscribers, published.acknowledged, deadline)
            async with asyncio.timeout(max(10.0, _remaining(deadline))):
                history = {
                    channel: await history_ids(publishing, base, token, channel)
                    for channel in channels
                }
        finally:
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        async with asyncio.timeout(10):
            await asyncio.gather(
                *(
                    bayeux_disconnect(publishing, base, token, d.client_id)
                    for d in subscribers
                    if d.client_id is not None
                )
            )
    crashed = [
        f"{task.get_name()}: {result!r}"
        for task, result in zip(tasks, results, strict=True)
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError)
    ]
    incomplete = sorted(behind)
    return Outcome(published, killed, killed_after, held, subscribers, incomplete, history, crashed)


def _report(outcome: Outcome, seconds: float) -> None:
    published, killed = outcome.published, outcome.killed
    print(
        f"\nscale-out: {published.events} events published through nginx to {NODES} nodes in "
        f"{published.seconds:.2f} s = {published.events_per_second:.0f} events/s "
        f"(while {len(outcome.subscribers)} subscribers streamed; not counting "
        f"{published.paused:.2f} s paused halfway); node {killed.base_url} "
        f"(supervisor {killed.supervisor}, children {list(killed.children)}) SIGKILLed after "
        f"{outcome.killed_after} acknowledged events, {outcome.held} connect(s) held by one "
        "of its workers"
    )
    print(
        f"  publish retries {dict(published.retries)}; acknowledgements of retries marked "
        f"duplicate: {published.duplicates}"
    )
    for kind in ("sse", "bayeux"):
        group = [d for d in outcome.subscribers if d.name.startswith(kind)]
        causes: Counter[str] = Counter()
        for d in group:
            causes.update(d.failures)
        print(
            f"  {kind}: {sum(1 for d in group if d.reconnects)} of {len(group)} subscribers "
            f"reconnected ({sum(len(d.reconnects) for d in group)} reconnects), "
            f"{sum(len(d.received) for d in group)} deliveries, "
            f"{sum(len(d.received) - len(set(d.received)) for d in group)} re-deliveries; "
            f"connection ends {dict(causes)}"
        )
    print(f"  whole test {seconds:.1f} s")


@pytest.mark.timeout(300)
async def test_three_nodes_behind_nginx_lose_nothing_when_one_is_killed(
    redis_server: RunningRedis, signing_key_pem: str
) -> None:
    started = time.monotonic()
    deadline = started + DEADLINE_S
    channels = [channel_name() for _ in range(CHANNELS)]
    with running_nodes(NODES, node_env(redis_server.url, signing_key_pem)) as nodes:
        await wait_ready([node.base_url for node in nodes])
        with running_nginx([node.base_url for node in nodes]) as balancer:
            outcome = await _scenario(balancer, nodes[1], channels, deadline)
            nginx_log = balancer.error_log()
    _report(outcome, time.monotonic() - started)

    assert outcome.crashed == [], outcome.crashed
    published = outcome.published
    assert outcome.killed_after < EVENTS
    assert published.events == EVENTS
    for channel in channels:
        acknowledged = published.acknowledged[channel]
        assert len(set(acknowledged)) == len(acknowledged), f"{channel}: a ReplayId acked twice"
        # Every acknowledged publish is stored, and no retry stored anything twice.
        stored = outcome.history[channel]
        assert stored == acknowledged, (
            f"{channel}: history holds {len(stored)} events, {len(acknowledged)} acknowledged; "
            f"missing {sorted(set(acknowledged) - set(stored))[:5]}, "
            f"unacknowledged {sorted(set(stored) - set(acknowledged))[:5]}"
        )
    problems = {d.name: d.problems for d in outcome.subscribers if d.problems}
    assert problems == {}, problems
    wrong = {
        d.name: found
        for d in outcome.subscribers
        if (found := violations(d, published.acknowledged[d.channel]))
    }
    by_name = {d.name: d for d in outcome.subscribers}
    examples = {
        name: [*found, f"reconnects at {by_name[name].reconnects}", f"{by_name[name].failures}"]
        for name, found in list(wrong.items())[:5]
    }
    assert wrong == {}, (
        f"{len(wrong)} subscriber(s) wrong; incomplete at the deadline: {outcome.incomplete}; "
        f"for example {examples}\nnginx error log (end):\n{nginx_log[-3000:]}"
    )
    assert outcome.incomplete == []
    # The kill was felt: streams and held long polls on the victim broke and were resumed.
    assert any(d.reconnects for d in outcome.subscribers if d.name.startswith("sse"))
    assert outcome.held > 0, "the victim held no Bayeux connect when it was killed"
    assert any(d.reconnects for d in outcome.subscribers if d.name.startswith("bayeux"))


async def _measure(
    http: httpx.AsyncClient, balancer: RunningNginx, token: str
) -> tuple[PublishResult, dict[str, list[int]]]:
    """The throughput load through `balancer` (after a small warm-up) and the channels' history."""
    await publish_load(
        http,
        balancer.base_url,
        token,
        [channel_name()],
        events=PUBLISHERS * 4 * BATCH,
        batch_size=BATCH,
        publishers=PUBLISHERS,
    )
    channels = [channel_name() for _ in range(CHANNELS)]
    result = await publish_load(
        http,
        balancer.base_url,
        token,
        channels,
        events=THROUGHPUT_EVENTS,
        batch_size=BATCH,
        publishers=PUBLISHERS,
    )
    history = {
        channel: await history_ids(http, balancer.base_url, token, channel) for channel in channels
    }
    return result, history


@pytest.mark.timeout(300)
async def test_publish_throughput_through_nginx_one_node_and_three(
    redis_server: RunningRedis, signing_key_pem: str
) -> None:
    """The same load through nginx to 1 node and to 3, twice each in alternating order (1, 3,
    3, 1) so warm-up favours neither; prints both rates and their ratio."""
    runs: list[tuple[int, PublishResult, dict[str, list[int]]]] = []
    with running_nodes(NODES, node_env(redis_server.url, signing_key_pem)) as nodes:
        await wait_ready([node.base_url for node in nodes])
        with (
            running_nginx([nodes[0].base_url]) as single,
            running_nginx([node.base_url for node in nodes]) as balanced,
        ):
            async with _client(PUBLISHERS + 5) as http, asyncio.timeout(120):
                token = await _token(http, single.base_url)
                for count, balancer in (
                    (1, single),
                    (NODES, balanced),
                    (NODES, balanced),
                    (1, single),
                ):
                    runs.append((count, *await _measure(http, balancer, token)))
    rates = {
        count: sum(r.events for c, r, _ in runs if c == count)
        / sum(r.seconds for c, r, _ in runs if c == count)
        for count in (1, NODES)
    }
    print(
        f"\npublish through nginx, {PUBLISHERS} publishers x {THROUGHPUT_EVENTS // PUBLISHERS} "
        f"events in batches of {BATCH}, twice per setup: 1 node {rates[1]:.0f} events/s, "
        f"{NODES} nodes {rates[NODES]:.0f} events/s, ratio {rates[NODES] / rates[1]:.2f} "
        f"(runs: {', '.join(f'{c} node(s) {r.events_per_second:.0f}/s' for c, r, _ in runs)})"
    )
    for _, result, history in runs:
        assert result.events == THROUGHPUT_EVENTS
        assert sum(len(ids) for ids in result.acknowledged.values()) == THROUGHPUT_EVENTS
        assert result.duplicates == 0, result.retries
        for channel, acknowledged in result.acknowledged.items():
            assert history[channel] == acknowledged
