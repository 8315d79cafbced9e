"""Drain under load: two replaybus nodes on one Redis behind a real nginx (plain round robin),
and one of them is stopped with SIGTERM while subscribers stream and publishers publish.

Four SSE subscribers (two per channel) and four Bayeux subscribers (on the first channel), all
the project's own `replaybus_client.Subscriber`, and four publishers (two per channel,
`replaybus_client.Publisher`, retrying with idempotency keys) talk to nginx only. 600 events go
out one by one over two channels. A third of the way, the publishers stop before their next
event until every subscriber has everything acknowledged so far, so every stream is idle and
every Bayeux subscriber holds a long poll; the victim is then the node holding at least one
subscriber's SSE stream and one subscriber's held connect. Publishing to the second channel
resumes, and while it flows the victim gets SIGTERM (a single-process node: the signal goes to
the server process itself), so publishes race its shutdown. Publishing to the first channel
resumes once the victim has answered its held connects (an event arriving first would answer a
long poll before the drain could, and which Bayeux subscribers the drain sent away would be
left to chance).

Besides the subscribers, each node also serves, directly (not through nginx), one raw SSE
stream and one raw held Bayeux connect on a channel nobody publishes to, and six threads poll
the victim's `/readyz` directly from before the signal until it refuses connections.

What the drain must do (DESIGN.md, house rule 11): readiness turns 503 `draining` before the
node stops accepting; SSE streams end with a `retry:` hint; held long polls return with advice
`reconnect: retry` and a jittered interval; the process exits within the shutdown grace; and
clients resume elsewhere by ReplayId with nothing lost.
"""

from __future__ import annotations

import asyncio
import functools
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from replaybus_client import ALL_RETAINED, ClientCredentials, Publisher, Subscriber

from tests.e2e.scale_clients import Deliveries, Pause, history_ids, violations
from tests.e2e.scale_cluster import node_env, running_nodes, wait_ready
from tests.e2e.server import CLIENT_ID, CLIENT_SECRET, RunningServer
from tests.e2e.sse import channel_name
from tests.harness.nginx import running_nginx
from tests.harness.redis import RunningRedis

# Two channels. Bayeux subscribers all follow the first, whose publishing stops around the
# signal so that which long polls the victim holds is known; publishing to the second goes on
# across the signal, so publishes race the victim's shutdown. SSE subscribers follow both.
CHANNELS = 2
EVENTS_PER_CHANNEL = 300
EVENTS = CHANNELS * EVENTS_PER_CHANNEL
PUBLISHERS_PER_CHANNEL = 2  # publisher k of a channel publishes events k, k + 2, ...
PAUSE_AT = 100  # acknowledged events of a channel before its publishers stop for the signal
FLOWING_BEFORE_SIGNAL = 10  # second-channel events acknowledged after resuming, before SIGTERM
SSE_SUBSCRIBERS = 4
BAYEUX_SUBSCRIBERS = 4
# Pollers of the victim's /readyz. A request the node has read before it closes its connections
# is answered, so with several pollers keeping one in flight nearly all the time, the 503 of the
# moment between "draining" and "listener closed" (up to one 0.1 s uvicorn tick) is seen unless
# the listener closes first (see `_check_readiness`).
READINESS_POLLERS = 6
SHUTDOWN_GRACE_S = 5.0
SSE_RETRY_S = 1.0
RECONNECT_JITTER_S = 2.0
BAYEUX_TIMEOUT_S = 60.0  # the raw held connects must still be held when the signal comes
# The drain bound is the shutdown grace (uvicorn waits that long for open requests) plus this
# margin for what comes before and after it: the main loop notices the signal on its next
# 0.1 s tick, waits 0.1 s after asking connections to close, runs the lifespan shutdown (Redis
# pool, live feed, hub) and the interpreter exits — on a loaded two-core machine.
EXIT_MARGIN_S = 5.0
DEADLINE_S = 90.0  # the whole scenario
API_VERSION = "58.0"
STORED = "replaybus_events_published_total"  # events a node stored (not retries' duplicates)

Transport = Literal["sse", "bayeux"]


def _remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


# -- what each subscriber sees -----------------------------------------------------------------


@dataclass
class Watch:
    """One subscriber's HTTP exchanges as its client sees them (an httpx response hook)."""

    transport: Transport
    deliveries: Deliveries
    opened: asyncio.Event = field(default_factory=asyncio.Event)
    #: Successful `/meta/connect` replies with advice, for a session that had already
    #: connected: only a held connect ended by a drain carries advice then. Each is
    #: (events received before it, its advice).
    drain_advice: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    #: Seconds from the drain advice's arrival to the client's next Bayeux request.
    paused: list[float] = field(default_factory=list)
    _connected: set[str] = field(default_factory=set)
    _advised_at: float | None = None

    async def on_request(self, request: httpx.Request) -> None:
        if self._advised_at is not None and request.url.path.startswith("/cometd/"):
            self.paused.append(time.monotonic() - self._advised_at)
            self._advised_at = None

    async def on_response(self, response: httpx.Response) -> None:
        path = response.request.url.path
        if self.transport == "sse":
            if path.startswith("/v1/stream/") and response.status_code == 200:
                self.opened.set()
            return
        if not path.startswith("/cometd/") or response.status_code != 200:
            return
        await response.aread()
        for message in response.json():
            channel = message.get("channel")
            if channel == "/meta/subscribe" and message.get("successful"):
                self.opened.set()
            if channel != "/meta/connect" or not message.get("successful"):
                continue
            client_id = str(message.get("clientId"))
            advice = message.get("advice")
            if client_id in self._connected and isinstance(advice, dict):
                self.drain_advice.append((len(self.deliveries.received), advice))
                self._advised_at = time.monotonic()
            self._connected.add(client_id)


@dataclass
class Running:
    subscriber: Subscriber
    watch: Watch
    http: httpx.AsyncClient
    task: asyncio.Task[None]

    @property
    def name(self) -> str:
        return self.watch.deliveries.name


async def _consume(subscriber: Subscriber, deliveries: Deliveries) -> None:
    """Record every event the subscriber hands over, noting when its client reconnected."""
    seen_reconnects = 0
    async for event in subscriber:
        if subscriber.reconnects != seen_reconnects:
            seen_reconnects = subscriber.reconnects
            deliveries.reconnected()
        if event.channel != deliveries.channel:
            deliveries.problems.append(f"an event of {event.channel}")
        deliveries.record(event.replay_id)
        if len(deliveries.received) > 2 * EVENTS:
            deliveries.problems.append("more than twice the events published: giving up")
            return


async def _start_subscriber(
    base_url: str, tokens: ClientCredentials, transport: Transport, deliveries: Deliveries
) -> Running:
    watch = Watch(transport, deliveries)
    http = httpx.AsyncClient(
        timeout=httpx.Timeout(30.0, read=None),  # streams and held polls are quiet
        trust_env=False,
        event_hooks={"request": [watch.on_request], "response": [watch.on_response]},
    )
    subscriber = Subscriber(
        base_url,
        deliveries.channel,
        tokens,
        transport=transport,
        start=ALL_RETAINED,
        reconnect_cap=1.0,
        http=http,
    )
    task = asyncio.create_task(_consume(subscriber, deliveries), name=deliveries.name)
    return Running(subscriber, watch, http, task)


async def _stop_subscriber(running: Running) -> BaseException | None:
    running.task.cancel()
    results = await asyncio.gather(running.task, return_exceptions=True)
    await running.subscriber.aclose()
    await running.http.aclose()
    outcome = results[0]
    if isinstance(outcome, asyncio.CancelledError):
        return None
    return outcome if isinstance(outcome, BaseException) else None


async def _catch_up(
    subscribers: list[Running], acknowledged: dict[str, list[int]], deadline: float
) -> dict[str, list[str]]:
    """Until every subscriber has every acknowledged event of its channel (or the deadline);
    returns those that do not, with what is wrong with what they received."""
    for running in subscribers:
        running.watch.deliveries.expect(frozenset(acknowledged[running.watch.deliveries.channel]))
    waits = {
        asyncio.create_task(r.watch.deliveries.complete.wait()): r.watch.deliveries
        for r in subscribers
    }
    _, pending = await asyncio.wait(waits, timeout=_remaining(deadline))
    behind: dict[str, list[str]] = {}
    for waiting in pending:
        waiting.cancel()
        d = waits[waiting]
        behind[d.name] = [*violations(d, acknowledged[d.channel]), f"problems {d.problems}"]
    return behind


# -- publishing --------------------------------------------------------------------------------


@dataclass
class Published:
    channels: list[str]
    #: Acknowledged ReplayIds per channel, in the order the acknowledgements came.
    acknowledged: dict[str, list[int]] = field(default_factory=dict)
    #: When each acknowledgement came (time.monotonic()), per channel.
    acknowledged_at: dict[str, list[float]] = field(default_factory=dict)
    duplicates: int = 0
    #: Every HTTP answer the publishers got, by status (retries show as 5xx here).
    answers: Counter[int] = field(default_factory=Counter)
    progress: asyncio.Condition = field(default_factory=asyncio.Condition)

    def __post_init__(self) -> None:
        for channel in self.channels:
            self.acknowledged[channel] = []
            self.acknowledged_at[channel] = []

    @property
    def count(self) -> int:
        return sum(len(ids) for ids in self.acknowledged.values())

    async def on_response(self, response: httpx.Response) -> None:
        self.answers[response.status_code] += 1

    async def record(self, channel: str, replay_id: int, duplicate: bool) -> None:
        self.acknowledged[channel].append(replay_id)
        self.acknowledged_at[channel].append(time.monotonic())
        self.duplicates += duplicate
        async with self.progress:
            self.progress.notify_all()

    async def reach(self, channel: str, count: int) -> None:
        """Until `count` events of `channel` are acknowledged."""
        async with self.progress:
            await self.progress.wait_for(lambda: len(self.acknowledged[channel]) >= count)


async def _publish(
    publisher: Publisher, channel: str, numbers: range, pause: Pause, published: Published
) -> None:
    for number in numbers:
        await pause.checkpoint(len(published.acknowledged[channel]))
        ack = await publisher.publish(channel, {"n": number})
        assert ack.channel == channel, ack
        await published.record(channel, ack.replay_id, ack.duplicate)
    pause.stopped(len(published.acknowledged[channel]))


async def _publish_all(
    publisher: Publisher, pauses: dict[str, Pause], published: Published
) -> None:
    async with asyncio.TaskGroup() as group:
        for channel, pause in pauses.items():
            for index in range(PUBLISHERS_PER_CHANNEL):
                numbers = range(index, EVENTS_PER_CHANNEL, PUBLISHERS_PER_CHANNEL)
                group.create_task(_publish(publisher, channel, numbers, pause, published))


# -- probes straight at one node ---------------------------------------------------------------


async def _raw_sse(
    client: httpx.AsyncClient, base_url: str, token: str, channel: str, opened: asyncio.Event
) -> list[str]:
    """Every line of one stream until the server ends it."""
    lines: list[str] = []
    async with client.stream(
        "GET", f"{base_url}/v1/stream{channel}", headers={"Authorization": f"Bearer {token}"}
    ) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            lines.append(line)
            if line.startswith("id:"):  # the opening `retry:` and `id:` have arrived
                opened.set()
            assert len(lines) < 1000, lines[-20:]
    return lines


async def _bayeux(
    client: httpx.AsyncClient, base_url: str, token: str, messages: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    response = await client.post(
        f"{base_url}/cometd/{API_VERSION}",
        json=messages,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text
    replies: list[dict[str, Any]] = response.json()
    return replies


async def _held_connect(
    client: httpx.AsyncClient, node: RunningServer, token: str, channel: str
) -> asyncio.Task[list[dict[str, Any]]]:
    """A Bayeux session on `node` whose second connect is held (nothing is published to
    `channel`); the task ends with that connect's reply."""
    [handshake] = await _bayeux(
        client,
        node.base_url,
        token,
        [
            {
                "channel": "/meta/handshake",
                "version": "1.0",
                "supportedConnectionTypes": ["long-polling"],
            }
        ],
    )
    assert handshake["successful"], handshake
    client_id = handshake["clientId"]
    connect = {"channel": "/meta/connect", "clientId": client_id, "connectionType": "long-polling"}
    [subscribed] = await _bayeux(
        client,
        node.base_url,
        token,
        [{"channel": "/meta/subscribe", "clientId": client_id, "subscription": channel}],
    )
    assert subscribed["successful"], subscribed
    [first] = await _bayeux(client, node.base_url, token, [connect])  # answered at once
    assert first["successful"], first
    held = asyncio.create_task(_bayeux(client, node.base_url, token, [connect]))
    await node.wait_for_held_connects(1)
    return held


@dataclass
class NodeProbes:
    sse: asyncio.Task[list[str]]
    held: asyncio.Task[list[dict[str, Any]]]


async def _probe_node(
    client: httpx.AsyncClient, node: RunningServer, token: str, quiet: str
) -> NodeProbes:
    opened = asyncio.Event()
    sse = asyncio.create_task(_raw_sse(client, node.base_url, token, quiet, opened))
    async with asyncio.timeout(10):
        await opened.wait()
    return NodeProbes(sse, await _held_connect(client, node, token, quiet))


Polled = tuple[float, float, str]  # (request sent, answer or failure, what it was)


def _poll_readiness(
    base_url: str, stop: threading.Event, outcomes: list[Polled], on_ready: Callable[[], object]
) -> None:
    """GET /readyz back to back until the node refuses connections (or `stop`, or 60 s).
    Blocking, in a thread, so the test's busy event loop cannot delay a probe."""
    deadline = time.monotonic() + 60
    with httpx.Client(timeout=5, trust_env=False) as probe:
        for _ in range(200_000):
            if stop.is_set() or time.monotonic() > deadline:
                return
            sent = time.monotonic()
            try:
                response = probe.get(base_url + "/readyz")
                body = response.json()
                outcome = f"{response.status_code} {body.get('error', body.get('status'))}"
            except httpx.ConnectError:
                outcome = "refused"
            except httpx.TransportError as error:  # a keep-alive connection closed under it
                outcome = f"closed ({type(error).__name__})"
            outcomes.append((sent, time.monotonic(), outcome))
            if outcome == "200 ready" and len(outcomes) == 1:
                on_ready()
            if outcome == "refused":
                return


async def _metric(client: httpx.AsyncClient, node: RunningServer, name: str) -> int:
    """The sum of a metric's samples (over its labels) on one node."""
    text = (await client.get(node.base_url + "/metrics")).text
    return round(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name
        )
    )


async def _held(client: httpx.AsyncClient, node: RunningServer) -> int:
    return int((await client.get(node.base_url + "/readyz")).json()["heldConnects"])


async def _settled(
    client: httpx.AsyncClient, nodes: list[RunningServer]
) -> tuple[list[int], list[int]]:
    """Subscribers' SSE streams and held connects per node (the raw probes not counted), once
    every subscriber has one of each kind open (polling the nodes' own counters)."""
    last: tuple[list[int], list[int]] = ([], [])
    async with asyncio.timeout(15):
        for _ in range(1000):
            streams = [await _metric(client, n, "replaybus_sse_streams") - 1 for n in nodes]
            held = [await _held(client, n) - 1 for n in nodes]
            last = (streams, held)
            if sum(streams) == SSE_SUBSCRIBERS and sum(held) == BAYEUX_SUBSCRIBERS:
                return last
            await asyncio.sleep(0.02)  # other processes' state: nothing to await but it
    raise AssertionError(f"subscribers never settled: streams, held per node {last}")


# -- the scenario ------------------------------------------------------------------------------


@dataclass
class Drain:
    victim: int
    streams: list[int]
    held: list[int]
    signalled: float
    exited_after: float
    returncode: int
    readiness: list[list[Polled]]
    stored_while_draining: int  # events the victim stored after its signal
    raw_sse: list[str]
    raw_held: list[dict[str, Any]]
    published: Published
    subscribers: list[Running]
    behind: dict[str, list[str]] = field(default_factory=dict)
    history: dict[str, list[int]] = field(default_factory=dict)
    crashed: list[str] = field(default_factory=list)


async def _start_subscribers(
    base_url: str,
    tokens: ClientCredentials,
    channels: list[str],
    deadline: float,
    started: list[Running],
) -> None:
    """SSE subscribers one after another (each stream open before the next starts, so round
    robin spreads them over both nodes), on both channels, then the Bayeux ones, on the first
    channel; each goes into `started`."""
    plan: tuple[tuple[Transport, int], ...] = (
        ("sse", SSE_SUBSCRIBERS),
        ("bayeux", BAYEUX_SUBSCRIBERS),
    )
    for transport, count in plan:
        for number in range(count):
            channel = channels[number % CHANNELS if transport == "sse" else 0]
            deliveries = Deliveries(f"{transport}-{number}", channel)
            running = await _start_subscriber(base_url, tokens, transport, deliveries)
            started.append(running)
            async with asyncio.timeout(min(15.0, _remaining(deadline))):
                await running.watch.opened.wait()


async def _scenario(
    nodes: list[RunningServer], base_url: str, channels: list[str], deadline: float
) -> Drain:
    quiet = channel_name()  # the raw probes' channel: nothing is published to it
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, read=None), trust_env=False) as raw:
        tokens = ClientCredentials(base_url, CLIENT_ID, CLIENT_SECRET)
        token = await tokens.token(raw)  # one token for everyone (all nodes share the key)
        probes: list[NodeProbes] = []
        subscribers: list[Running] = []
        published = Published(channels)
        pauses = {channel: Pause(PAUSE_AT, PUBLISHERS_PER_CHANNEL) for channel in channels}
        try:
            for node in nodes:
                probes.append(await _probe_node(raw, node, token, quiet))
            await _start_subscribers(base_url, tokens, channels, deadline, subscribers)
            publishing_http = httpx.AsyncClient(
                timeout=30, trust_env=False, event_hooks={"response": [published.on_response]}
            )
            async with (
                publishing_http,
                Publisher(base_url, tokens, max_attempts=12, http=publishing_http) as publisher,
            ):
                publishing = asyncio.create_task(_publish_all(publisher, pauses, published))
                try:
                    outcome = await _drain_one(
                        raw, nodes, probes, subscribers, published, pauses, publishing, deadline
                    )
                finally:
                    for pause in pauses.values():
                        pause.resume()
                    if not publishing.done():
                        publishing.cancel()
                    await asyncio.gather(publishing, return_exceptions=True)
            outcome.behind = await _catch_up(subscribers, published.acknowledged, deadline)
            outcome.history = {
                channel: await history_ids(raw, base_url, await tokens.token(raw), channel)
                for channel in channels
            }
        finally:
            crashed = [
                f"{running.name}: {failure!r}"
                for running in subscribers
                if (failure := await _stop_subscriber(running)) is not None
            ]
            for probe in probes:
                for task in (probe.sse, probe.held):
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
    outcome.crashed = crashed
    return outcome


async def _all_paused(pauses: dict[str, Pause]) -> None:
    for pause in pauses.values():
        await pause.reached.wait()


async def _drain_one(
    raw: httpx.AsyncClient,
    nodes: list[RunningServer],
    probes: list[NodeProbes],
    subscribers: list[Running],
    published: Published,
    pauses: dict[str, Pause],
    publishing: asyncio.Task[None],
    deadline: float,
) -> Drain:
    held_channel, flowing_channel = published.channels
    async with asyncio.timeout(_remaining(deadline)):
        reached = asyncio.create_task(_all_paused(pauses))
        await asyncio.wait({reached, publishing}, return_when=asyncio.FIRST_COMPLETED)
        if publishing.done():
            reached.cancel()
            await publishing  # it failed: raise its error
        behind = await _catch_up(subscribers, published.acknowledged, deadline)
        assert behind == {}, f"before the signal, subscribers missed events: {behind}"
        streams, held = await _settled(raw, nodes)
    candidates = [i for i in range(len(nodes)) if streams[i] >= 1 and held[i] >= 1]
    assert candidates, f"no node holds both an SSE stream and a connect: {streams}, {held}"
    index = max(candidates, key=lambda i: streams[i] + held[i])
    victim, probe = nodes[index], probes[index]

    stop = threading.Event()
    readiness: list[list[Polled]] = [[] for _ in range(READINESS_POLLERS)]
    answering = [asyncio.Event() for _ in readiness]
    loop = asyncio.get_running_loop()
    pollers = [
        asyncio.create_task(
            asyncio.to_thread(
                _poll_readiness,
                victim.base_url,
                stop,
                outcomes,
                functools.partial(loop.call_soon_threadsafe, ready.set),
            )
        )
        for outcomes, ready in zip(readiness, answering, strict=True)
    ]
    try:
        async with asyncio.timeout(10):
            await asyncio.gather(*(ready.wait() for ready in answering))  # polling has begun
        # Publishing to the second channel goes on across the signal: publishes are in flight
        # (to both nodes, round robin) when it comes.
        pauses[flowing_channel].resume()
        await published.reach(flowing_channel, PAUSE_AT + FLOWING_BEFORE_SIGNAL)
        stored_before = await _metric(raw, victim, STORED)
        signalled = time.monotonic()
        victim.process.send_signal(signal.SIGTERM)
        exiting = asyncio.create_task(
            asyncio.to_thread(victim.process.wait, SHUTDOWN_GRACE_S + EXIT_MARGIN_S)
        )
        async with asyncio.timeout(SHUTDOWN_GRACE_S + EXIT_MARGIN_S):
            raw_held = await probe.held
        # The victim has answered its held connects "draining": only now may events of the
        # first channel wake the Bayeux subscribers' long polls again.
        pauses[held_channel].resume()
        try:
            returncode = await exiting
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the node did not exit within {SHUTDOWN_GRACE_S + EXIT_MARGIN_S} s of SIGTERM"
            ) from None
        exited_after = time.monotonic() - signalled
        async with asyncio.timeout(10):
            raw_sse = await probe.sse
            await asyncio.gather(*pollers)
    finally:
        stop.set()
        await asyncio.gather(*pollers, return_exceptions=True)
    async with asyncio.timeout(_remaining(deadline)):
        await publishing
    survivor = nodes[1 - index]
    stored_while_draining = EVENTS - stored_before - await _metric(raw, survivor, STORED)
    return Drain(
        victim=index,
        streams=streams,
        held=held,
        signalled=signalled,
        exited_after=exited_after,
        returncode=returncode,
        readiness=readiness,
        stored_while_draining=stored_while_draining,
        raw_sse=raw_sse,
        raw_held=raw_held,
        published=published,
        subscribers=subscribers,
    )


def _retry_ms(line: str) -> int:
    name, _, value = line.partition(":")
    assert name == "retry", line
    return int(value.strip())


def _check_readiness(readiness: list[list[Polled]], signalled: float) -> bool:
    """Each poller saw 200s, then (after the signal) 503 `draining`, then the listener gone:
    never `draining` before the signal, never ready again after `draining`, never anything
    else (a 500, `not_ready`). Returns whether `draining` was seen.

    It is not seen when the listener closes first. uvicorn notices the signal on its next
    0.1 s tick and, in that same step, closes its listener and its idle connections, while the
    draining flag is set by a callback the signal handler schedules on the loop
    (api/server.py). When the signal lands just before a tick, the tick can run first: the
    listener is gone before any new request can see `draining` (open requests still do: the
    raw stream and held connect checked by the caller). Then every poller goes from `ready`
    straight to a closed connection, which the checks below still hold to."""
    for polled in readiness:
        early = [(sent, answered, o) for sent, answered, o in polled if answered < signalled]
        assert all(o == "200 ready" for *_, o in early), early
        outcomes = [o for *_, o in polled]
        if "503 draining" in outcomes:
            after = outcomes[outcomes.index("503 draining") :]
            assert "200 ready" not in after, outcomes
        assert outcomes[-1] == "refused", outcomes[-8:]
        others = set(outcomes) - {"200 ready", "503 draining", "refused"}
        assert all(o.startswith("closed (") for o in others), outcomes  # never 500, not_ready
    return any(o == "503 draining" for polled in readiness for *_, o in polled)


@pytest.mark.timeout(180)
async def test_sigterm_drains_a_node_under_load_and_clients_resume_on_the_other(
    redis_server: RunningRedis, signing_key_pem: str
) -> None:
    deadline = time.monotonic() + DEADLINE_S
    channels = [channel_name() for _ in range(CHANNELS)]
    env = node_env(
        redis_server.url,
        signing_key_pem,
        {
            "REPLAYBUS_WORKERS": "1",
            "REPLAYBUS_SHUTDOWN_GRACE": f"{SHUTDOWN_GRACE_S:g}s",
            "REPLAYBUS_SSE_RETRY": f"{SSE_RETRY_S:g}s",
            "REPLAYBUS_RECONNECT_JITTER": f"{RECONNECT_JITTER_S:g}s",
            "REPLAYBUS_BAYEUX_TIMEOUT": f"{BAYEUX_TIMEOUT_S:g}s",
        },
    )
    with running_nodes(2, env) as nodes:
        await wait_ready([node.base_url for node in nodes])
        with running_nginx([node.base_url for node in nodes]) as balancer:
            outcome = await _scenario(nodes, balancer.base_url, channels, deadline)
            nginx_log = balancer.error_log()

    sse = [r for r in outcome.subscribers if r.watch.transport == "sse"]
    bayeux = [r for r in outcome.subscribers if r.watch.transport == "bayeux"]
    after_signal = [
        [o for _, answered, o in polled if answered >= outcome.signalled]
        for polled in outcome.readiness
    ]
    print(
        f"\ndrain: node {outcome.victim} (SSE streams per node {outcome.streams}, held connects "
        f"{outcome.held}) exited {outcome.exited_after:.2f} s after SIGTERM with "
        f"{outcome.returncode}, having stored {outcome.stored_while_draining} event(s) after "
        f"the signal; readiness polls after the signal: {after_signal}"
    )
    print(
        "  reconnects (re-deliveries): "
        + ", ".join(
            f"{r.name} {r.subscriber.reconnects} "
            f"({len(r.watch.deliveries.received) - len(set(r.watch.deliveries.received))})"
            for r in outcome.subscribers
        )
        + "; drain advice: "
        + ", ".join(f"{r.name} {[a for _, a in r.watch.drain_advice]}" for r in bayeux)
        + f"; publish answers {dict(outcome.published.answers)}, "
        + f"acknowledgements marked duplicate: {outcome.published.duplicates}"
    )

    # The node drained: readiness first, then streams and held polls, then it exited in time.
    saw_draining = _check_readiness(outcome.readiness, outcome.signalled)
    print(f"  /readyz answered 503 draining before the listener closed: {saw_draining}")
    bound = SHUTDOWN_GRACE_S + EXIT_MARGIN_S
    assert outcome.exited_after <= bound, f"exited {outcome.exited_after:.2f} s after SIGTERM"
    assert outcome.returncode in (0, -signal.SIGTERM), outcome.returncode  # uvicorn re-raises
    assert outcome.stored_while_draining >= 0, "the nodes stored more events than were sent"
    # Publishing went on across the signal.
    flowing = outcome.published.acknowledged_at[channels[1]]
    assert min(flowing) < outcome.signalled < max(flowing)
    retry_lines = [line for line in outcome.raw_sse if line.startswith("retry:")]
    assert len(retry_lines) == 2, outcome.raw_sse  # the opening hint, and the final one
    assert [line for line in outcome.raw_sse if line][-1] == retry_lines[-1], outcome.raw_sse
    assert (
        SSE_RETRY_S * 1000
        <= _retry_ms(retry_lines[-1])
        <= (SSE_RETRY_S + RECONNECT_JITTER_S) * 1000
    )
    [reply] = outcome.raw_held
    assert reply["channel"] == "/meta/connect", reply
    assert reply["successful"], reply
    assert reply["advice"]["reconnect"] == "retry", reply
    assert 0 <= reply["advice"]["interval"] <= RECONNECT_JITTER_S * 1000, reply

    # Nothing acknowledged was lost or stored twice, and everyone got everything, in order.
    assert outcome.crashed == [], outcome.crashed
    assert outcome.published.count == EVENTS
    for channel in channels:
        acknowledged = sorted(outcome.published.acknowledged[channel])
        assert len(set(acknowledged)) == len(acknowledged), f"{channel}: a ReplayId acked twice"
        assert outcome.history[channel] == acknowledged, channel
    problems = {r.name: r.watch.deliveries.problems for r in outcome.subscribers}
    assert all(not found for found in problems.values()), problems
    assert outcome.behind == {}, f"{outcome.behind}\nnginx error log:\n{nginx_log[-3000:]}"
    for running in outcome.subscribers:
        d = running.watch.deliveries
        assert violations(d, sorted(outcome.published.acknowledged[d.channel])) == [], d.name
        redelivered = len(d.received) - len(set(d.received))
        # Resuming after the last event processed re-delivers at most the one in hand.
        assert redelivered <= running.subscriber.reconnects, (d.name, redelivered)

    # Exactly the subscribers the victim served were sent away, and they resumed elsewhere.
    reconnected = [r for r in sse if r.subscriber.reconnects > 0]
    assert len(reconnected) == outcome.streams[outcome.victim], (
        "SSE subscribers that reconnected",
        [r.name for r in reconnected],
    )
    for running in reconnected:
        d = running.watch.deliveries
        assert d.reconnects, d.name
        assert d.reconnects[0] < len(d.received), (d.name, d.reconnects)
    drained = [r for r in bayeux if r.watch.drain_advice]
    assert len(drained) == outcome.held[outcome.victim], (
        "Bayeux subscribers sent away by the drain",
        [r.name for r in drained],
    )
    for running in drained:
        [(before, advice)] = running.watch.drain_advice
        assert advice["reconnect"] == "retry", advice
        assert 0 <= advice["interval"] <= RECONNECT_JITTER_S * 1000, advice
        # The client waits the advised interval before it comes back (to another node).
        [paused] = running.watch.paused
        assert paused >= advice["interval"] / 1000, (running.name, paused, advice)
        assert before < len(running.watch.deliveries.received), running.name
