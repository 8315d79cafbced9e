"""Clients for the scale-out test, behaving as real ones do when a node dies under them.

- `sse_subscriber`: an EventSource. It remembers the last `id:` it saw (also the data-less
  opening one) and, whenever its stream ends or breaks, reconnects with `Last-Event-ID`.
- `bayeux_subscriber`: a Salesforce-style long-polling client. On `403::Unknown client`, any
  unsuccessful connect or a transport failure (a 5xx from the proxy, a dropped connection) it
  handshakes again and resubscribes with `ext.replay` set to the last ReplayId it processed
  (-2 before its first event), which is how EMP-Connector and friends resume.
- `publish_load`: concurrent publishers posting JSON-array batches; a failed attempt (5xx or a
  transport error) is retried with the same `Idempotency-Key`, so a retry never stores twice.

Each subscriber records every ReplayId it receives, in order, with the points where it
reconnected, and `violations` says what is wrong with such a record.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from httpx_sse import aconnect_sse

__all__ = [
    "Deliveries",
    "Pause",
    "PublishResult",
    "bayeux_disconnect",
    "bayeux_subscriber",
    "history_ids",
    "publish_load",
    "sse_subscriber",
    "violations",
]

API_VERSION = "58.0"
_MAX_CONNECTIONS = 200  # per subscriber, over the whole test
_MAX_CONNECTS = 100_000  # long polls per Bayeux session
_MAX_PUBLISH_ATTEMPTS = 30
_MAX_PAGES = 1_000


def _backoff(failures: int) -> float:
    """Delay before retrying after `failures` consecutive failures (0.05 s, doubling, ≤ 1 s):
    what a client waits before trying again, not a synchronisation."""
    return min(1.0, 0.05 * 2.0 ** max(0, failures - 1))


@dataclass
class Deliveries:
    """What one subscriber received, in order, and where it reconnected."""

    name: str
    channel: str
    received: list[int] = field(default_factory=list)
    #: Indexes into `received` at which a new connection (SSE) or session (Bayeux) started.
    reconnects: list[int] = field(default_factory=list)
    #: Why connections ended or failed, counted (expected when a node dies).
    failures: Counter[str] = field(default_factory=Counter)
    #: Things a correct server never does (gaps, unexpected frames or messages).
    problems: list[str] = field(default_factory=list)
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    complete: asyncio.Event = field(default_factory=asyncio.Event)
    client_id: str | None = None  # the current Bayeux session
    _unique: set[int] = field(default_factory=set)
    _expected: frozenset[int] | None = None

    def record(self, replay_id: int) -> None:
        self.received.append(replay_id)
        self._unique.add(replay_id)
        self._check_complete()

    def reconnected(self) -> None:
        self.reconnects.append(len(self.received))

    def expect(self, replay_ids: frozenset[int]) -> None:
        """From now on `complete` is set once every one of `replay_ids` has been received."""
        self.complete.clear()
        self._expected = replay_ids
        self._check_complete()

    def _check_complete(self) -> None:
        expected = self._expected
        if (
            expected is not None
            and not self.complete.is_set()
            and len(self._unique) >= len(expected)
            and expected <= self._unique
        ):
            self.complete.set()


def violations(deliveries: Deliveries, acknowledged: Sequence[int]) -> list[str]:
    """Everything wrong with one subscriber's record against its channel's acknowledged
    ReplayIds (ascending): the first deliveries of each ReplayId must be exactly those, in
    order; within one connection ReplayIds only increase; and a ReplayId delivered again must
    follow a reconnect that came after its first delivery (a re-delivery after resuming)."""
    found: list[str] = []
    first_seen: dict[int, int] = {}
    firsts: list[int] = []
    for index, replay_id in enumerate(deliveries.received):
        if replay_id not in first_seen:
            first_seen[replay_id] = index
            firsts.append(replay_id)
            continue
        # A duplicate: is there a reconnect after its first delivery and at or before this one?
        after = bisect.bisect_right(deliveries.reconnects, first_seen[replay_id])
        if after == len(deliveries.reconnects) or deliveries.reconnects[after] > index:
            found.append(
                f"{replay_id} delivered again at #{index} (first at #{first_seen[replay_id]}) "
                f"without a reconnect in between (reconnects at {deliveries.reconnects})"
            )
    inversions = [
        (earlier, later) for earlier, later in itertools.pairwise(firsts) if later <= earlier
    ]
    if inversions:
        found.append(f"out of order {len(inversions)} time(s), first {inversions[0]}")
    expected = set(acknowledged)
    missing = sorted(expected - first_seen.keys())
    extra = sorted(first_seen.keys() - expected)
    if missing:
        found.append(f"missing {len(missing)} acknowledged event(s), first {missing[:5]}")
    if extra:
        found.append(f"{len(extra)} event(s) never acknowledged, first {extra[:5]}")
    starts = [0, *deliveries.reconnects, len(deliveries.received)]
    for start, end in itertools.pairwise(starts):
        segment = deliveries.received[start:end]
        if any(later <= earlier for earlier, later in itertools.pairwise(segment)):
            found.append(f"not increasing within the connection starting at #{start}")
            break
    return found


# -- SSE ---------------------------------------------------------------------------------------


async def sse_subscriber(
    client: httpx.AsyncClient, base_url: str, token: str, deliveries: Deliveries
) -> None:
    """Stream `deliveries.channel` from -2, reconnecting like EventSource; runs until cancelled
    (or until it has reconnected `_MAX_CONNECTIONS` times)."""
    url = f"{base_url}/v1/stream{deliveries.channel}"
    last_event_id = ""
    failures = 0
    for attempt in range(_MAX_CONNECTIONS):
        if attempt:
            deliveries.reconnected()
            await asyncio.sleep(_backoff(failures))
        headers = {"Authorization": f"Bearer {token}"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        failures += 1
        try:
            async with aconnect_sse(
                client, "GET", url, params={"replayId": "-2"}, headers=headers
            ) as source:
                status = source.response.status_code
                if status != 200:
                    await source.response.aread()
                    if status < 500:
                        deliveries.problems.append(f"HTTP {status}: {source.response.text}")
                        return
                    deliveries.failures[f"HTTP {status}"] += 1
                    continue
                deliveries.subscribed.set()
                failures = 0
                async for message in source.aiter_sse():
                    if message.id:  # EventSource keeps the last id, also from data-less frames
                        last_event_id = message.id
                    if message.data == "":
                        continue  # not dispatched (the opening `id:` and `retry:`)
                    if message.event != "message":
                        deliveries.problems.append(f"SSE {message.event}: {message.data}")
                        continue
                    envelope = orjson.loads(message.data)
                    if str(envelope.get("replayId")) != message.id:
                        deliveries.problems.append(f"id {message.id} carries {envelope}")
                    deliveries.record(int(message.id))
            deliveries.failures["stream ended"] += 1
        except httpx.TransportError as error:
            deliveries.failures[type(error).__name__] += 1
    deliveries.problems.append(f"gave up after {_MAX_CONNECTIONS} connections")


# -- Bayeux ------------------------------------------------------------------------------------


class SessionLost(Exception):
    """The Bayeux session cannot go on: handshake again."""


class Refused(Exception):
    """The server refused the request for good (a 4xx): retrying cannot help."""


async def _bayeux_post(
    client: httpx.AsyncClient, url: str, token: str, messages: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    response = await client.post(
        url,
        content=orjson.dumps(messages),
        headers={"Authorization": f"OAuth {token}", "Content-Type": "application/json"},
    )
    if 400 <= response.status_code < 500:
        raise Refused(f"HTTP {response.status_code}: {response.text}")
    if response.status_code != 200:
        raise SessionLost(f"HTTP {response.status_code}")
    replies: list[dict[str, Any]] = orjson.loads(response.content)
    return replies


def _take(deliveries: Deliveries, replies: list[dict[str, Any]]) -> None:
    """Record the delivered events; raise SessionLost on a failed or handshake-advising reply."""
    for message in replies:
        channel = message.get("channel")
        if "data" in message:
            if channel != deliveries.channel:
                deliveries.problems.append(f"event of another channel: {message}")
                continue
            deliveries.record(int(message["data"]["event"]["replayId"]))
            continue
        ext = message.get("ext")
        if isinstance(ext, dict) and "replaybus" in ext:
            deliveries.problems.append(f"Bayeux gap: {ext['replaybus']}")
        if not message.get("successful", False):
            raise SessionLost(f"{channel}: {message.get('error')}")
        advice = message.get("advice")
        if isinstance(advice, dict) and advice.get("reconnect") in ("handshake", "none"):
            raise SessionLost(f"{channel}: advice {advice.get('reconnect')}")


async def _bayeux_session(
    client: httpx.AsyncClient, url: str, token: str, deliveries: Deliveries
) -> None:
    handshake = await _bayeux_post(
        client,
        url,
        token,
        [
            {
                "channel": "/meta/handshake",
                "version": "1.0",
                "minimumVersion": "1.0",
                "supportedConnectionTypes": ["long-polling"],
            }
        ],
    )
    if not handshake or not handshake[0].get("successful", False):
        raise SessionLost(f"handshake: {handshake}")
    client_id = str(handshake[0]["clientId"])
    deliveries.client_id = client_id
    resume = deliveries.received[-1] if deliveries.received else -2
    connect = {"channel": "/meta/connect", "clientId": client_id, "connectionType": "long-polling"}
    subscribe = {
        "channel": "/meta/subscribe",
        "clientId": client_id,
        "subscription": deliveries.channel,
        "ext": {"replay": {deliveries.channel: resume}},
    }
    _take(deliveries, await _bayeux_post(client, url, token, [connect, subscribe]))
    deliveries.subscribed.set()
    for _ in range(_MAX_CONNECTS):
        _take(deliveries, await _bayeux_post(client, url, token, [connect]))
    deliveries.problems.append(f"session {client_id} reached {_MAX_CONNECTS} connects")


async def bayeux_subscriber(
    client: httpx.AsyncClient, base_url: str, token: str, deliveries: Deliveries
) -> None:
    """Long-poll `deliveries.channel` over `/cometd/58.0`; runs until cancelled (or until it
    has handshaken `_MAX_CONNECTIONS` times)."""
    url = f"{base_url}/cometd/{API_VERSION}"
    failures = 0
    for attempt in range(_MAX_CONNECTIONS):
        if attempt:
            deliveries.reconnected()
            await asyncio.sleep(_backoff(failures))
        received = len(deliveries.received)
        try:
            await _bayeux_session(client, url, token, deliveries)
        except SessionLost as lost:
            deliveries.failures[str(lost)] += 1
        except httpx.TransportError as error:
            deliveries.failures[type(error).__name__] += 1
        except Refused as refused:
            deliveries.problems.append(str(refused))
            return
        failures = 1 if len(deliveries.received) > received else failures + 1
    deliveries.problems.append(f"gave up after {_MAX_CONNECTIONS} handshakes")


async def bayeux_disconnect(
    client: httpx.AsyncClient, base_url: str, token: str, client_id: str
) -> None:
    """Best effort: end a session (the test is over; a failure here changes nothing)."""
    with contextlib.suppress(httpx.TransportError, SessionLost, Refused):
        await _bayeux_post(
            client,
            f"{base_url}/cometd/{API_VERSION}",
            token,
            [{"channel": "/meta/disconnect", "clientId": client_id}],
        )


# -- publishing --------------------------------------------------------------------------------


class Pause:
    """Stops every publisher before its next batch once `after` events are acknowledged, until
    `resume()`: `reached` is set when none has a batch in flight any more."""

    def __init__(self, after: int, publishers: int) -> None:
        self.after = after
        self.publishers = publishers
        self.reached = asyncio.Event()
        self.acknowledged_at = 0
        self.seconds = 0.0
        self._stopped = 0
        self._resume = asyncio.Event()
        self._since = 0.0

    async def checkpoint(self, acknowledged: int) -> None:
        if acknowledged < self.after or self._resume.is_set():
            return
        self.stopped(acknowledged)
        await self._resume.wait()

    def stopped(self, acknowledged: int) -> None:
        """A publisher stops here (at a checkpoint, or for good when it has no batch left)."""
        self._stopped += 1
        if self._stopped == self.publishers and not self.reached.is_set():
            self.acknowledged_at = acknowledged
            self._since = time.perf_counter()
            self.reached.set()

    def resume(self) -> None:
        if self.reached.is_set() and not self._resume.is_set():
            self.seconds = time.perf_counter() - self._since
        self._resume.set()


@dataclass
class PublishResult:
    #: Acknowledged ReplayIds per channel, ascending.
    acknowledged: dict[str, list[int]]
    seconds: float
    events: int
    #: Failed attempts that were retried with the same Idempotency-Key, by cause.
    retries: Counter[str]
    #: Acknowledgements answered `"duplicate": true` (an earlier attempt had stored the batch).
    duplicates: int
    #: Time spent stopped at a `Pause` (not counted in `seconds`).
    paused: float = 0.0

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds


async def _publish_batch(
    client: httpx.AsyncClient,
    base_url: str,
    token: str,
    channel: str,
    payloads: list[dict[str, Any]],
    retries: Counter[str],
) -> list[dict[str, Any]]:
    """One batch, retried with the same Idempotency-Key until it is acknowledged."""
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Idempotency-Key": f"scale-{uuid.uuid4().hex}",
    }
    body = orjson.dumps(payloads)
    for attempt in range(_MAX_PUBLISH_ATTEMPTS):
        if attempt:
            await asyncio.sleep(_backoff(attempt))
        try:
            response = await client.post(
                f"{base_url}/v1/events{channel}", content=body, headers=headers
            )
        except httpx.TransportError as error:
            retries[type(error).__name__] += 1
            continue
        if response.status_code >= 500:
            retries[f"HTTP {response.status_code}"] += 1
            continue
        assert response.status_code == 201, response.text
        acks: list[dict[str, Any]] = response.json()
        assert isinstance(acks, list), acks
        assert len(acks) == len(payloads), acks
        assert all(ack["channel"] == channel for ack in acks), acks
        return acks
    raise AssertionError(f"a batch to {channel} failed {_MAX_PUBLISH_ATTEMPTS} times: {retries}")


async def publish_load(
    client: httpx.AsyncClient,
    base_url: str,
    token: str,
    channels: Sequence[str],
    *,
    events: int,
    batch_size: int,
    publishers: int,
    pause: Pause | None = None,
    ledger: dict[str, list[int]] | None = None,
) -> PublishResult:
    """`events` events in batches of `batch_size`, batch i to channel i mod len(channels),
    posted by `publishers` concurrent tasks (publisher k posts batches k, k+publishers, …).
    Acknowledged ReplayIds are appended to `ledger` (per channel) as they come in."""
    batches = [
        (channels[number % len(channels)], start)
        for number, start in enumerate(range(0, events, batch_size))
    ]
    acknowledged = ledger if ledger is not None else {}
    for channel in channels:
        acknowledged.setdefault(channel, [])
    retries: Counter[str] = Counter()
    counts = {"events": 0, "duplicates": 0}

    async def publisher(index: int) -> None:
        for channel, start in batches[index::publishers]:
            if pause is not None:
                await pause.checkpoint(counts["events"])
            payloads = [
                {"publisher": index, "n": n} for n in range(start, min(start + batch_size, events))
            ]
            acks = await _publish_batch(client, base_url, token, channel, payloads, retries)
            acknowledged[channel].extend(int(ack["replayId"]) for ack in acks)
            counts["duplicates"] += sum(1 for ack in acks if ack.get("duplicate"))
            counts["events"] += len(acks)
        if pause is not None:
            pause.stopped(counts["events"])

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for index in range(publishers):
            group.create_task(publisher(index))
    paused = pause.seconds if pause is not None else 0.0
    seconds = time.perf_counter() - started - paused
    result = {channel: sorted(acknowledged[channel]) for channel in channels}
    return PublishResult(result, seconds, counts["events"], retries, counts["duplicates"], paused)


async def history_ids(
    client: httpx.AsyncClient, base_url: str, token: str, channel: str
) -> list[int]:
    """Every retained ReplayId of `channel`, paging `GET /v1/events/...` from the start."""
    found: list[int] = []
    after = -2
    for _ in range(_MAX_PAGES):
        response = await client.get(
            f"{base_url}/v1/events{channel}",
            params={"after": after, "limit": 1000},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 200, response.text
        page = response.json()
        assert "gap" not in page, page["gap"]
        if not page["events"]:
            return found
        found.extend(int(event["replayId"]) for event in page["events"])
        after = page["next"]
    raise AssertionError(f"{channel} has more than {_MAX_PAGES} pages")
