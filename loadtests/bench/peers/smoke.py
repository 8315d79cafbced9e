"""Smoke test of the benchmark's peers, with the raw HTTP/1.1 request shapes README.md gives.

    .venv/bin/python -m loadtests.bench.peers.smoke

One redis-server (tests.harness.redis), then Nchan and Faye on it, each pinned to the last core:
100 messages published through each and received by one subscriber (Nchan: one EventSource
stream; Faye: a Bayeux handshake, subscribe and held /meta/connect long-polls), then 20 000
messages published to one Nchan channel and replayed from the oldest. Prints the counts and
timings; exits non-zero when anything is missing, duplicated or out of order.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Any

from loadtests.bench.peers.client import Connection
from loadtests.bench.peers.faye import FayePeer, running_faye
from loadtests.bench.peers.nchan import NchanPeer, running_nchan
from tests.harness.redis import running_redis

LIVE_MESSAGES = 100
REPLAY_MESSAGES = 20_000
PUBLISH_CONNECTIONS = 4
RECEIVE_TIMEOUT_S = 60.0
REPLAY_TIMEOUT_S = 300.0


class SmokeFailure(Exception):
    pass


async def sse_events(lines: AsyncIterator[bytes]) -> AsyncIterator[tuple[bytes, bytes]]:
    """(id, data) of each Server-Sent Event. A comment line (Nchan's `: hi`) comes out as
    (b"", b":"), so a caller can tell the stream is established."""
    event_id, data = b"", list[bytes]()
    async for line in lines:
        if not line:
            if data:
                yield event_id, b"\n".join(data)
            event_id, data = b"", []
        elif line.startswith(b":"):
            yield b"", b":"
        else:
            name, _, value = line.partition(b":")
            value = value[1:] if value.startswith(b" ") else value
            if name == b"data":
                data.append(value)
            elif name == b"id":
                event_id = value


def payload(n: int) -> bytes:
    return json.dumps({"n": n, "sentAt": time.time() * 1000}, separators=(",", ":")).encode()


def check_sequence(name: str, received: list[int], expected: int) -> None:
    if received != list(range(expected)):
        missing = sorted(set(range(expected)) - set(received))
        raise SmokeFailure(
            f"{name}: received {len(received)} of {expected} ({len(set(received))} distinct,"
            f" missing {missing[:10]}{'...' if len(missing) > 10 else ''}, in order:"
            f" {received == sorted(received)})"
        )


# -- Nchan ------------------------------------------------------------------------------------


async def nchan_publish(peer: NchanPeer, channel: str, numbers: range) -> None:
    connection = await Connection(peer.base_url).open()
    try:
        for n in numbers:
            answer = await connection.request(
                "POST", peer.publish_path(channel), {"Accept": "text/json"}, payload(n)
            )
            if answer.status not in (201, 202):
                raise SmokeFailure(f"Nchan publish answered {answer.status}: {answer.body[:200]!r}")
    finally:
        connection.close()


async def nchan_receive(
    peer: NchanPeer, path: str, headers: dict[str, str], count: int, established: asyncio.Event
) -> tuple[list[int], list[bytes]]:
    connection = await Connection(peer.base_url).open()
    numbers: list[int] = []
    ids: list[bytes] = []
    try:
        status, answer, lines = await connection.stream(connection.prepare("GET", path, headers))
        if status != 200 or not answer.get("content-type", "").startswith("text/event-stream"):
            raise SmokeFailure(f"Nchan subscribe answered {status} {answer}")
        async for event_id, data in sse_events(lines):
            if data == b":":
                established.set()
                continue
            numbers.append(int(json.loads(data)["n"]))
            ids.append(event_id)
            if len(numbers) >= count:
                break
    finally:
        connection.close()
    return numbers, ids


def say(line: str) -> None:
    print(line, flush=True)


async def smoke_nchan(peer: NchanPeer) -> None:
    channel = "/smoke/nchan-live"
    established = asyncio.Event()
    receiving = asyncio.create_task(
        nchan_receive(
            peer,
            peer.subscribe_path(channel),
            peer.live_headers(channel),
            LIVE_MESSAGES,
            established,
        )
    )
    await asyncio.wait_for(established.wait(), 10)
    started = time.monotonic()
    await nchan_publish(peer, channel, range(LIVE_MESSAGES))
    numbers, ids = await asyncio.wait_for(receiving, RECEIVE_TIMEOUT_S)
    check_sequence("Nchan live", numbers, LIVE_MESSAGES)
    say(
        f"Nchan live: published {LIVE_MESSAGES}, EventSource subscriber received {len(numbers)}"
        f" in order in {time.monotonic() - started:.2f} s (ids {ids[0].decode()} ..."
        f" {ids[-1].decode()})"
    )

    # The same channel from the oldest through the query-string form.
    numbers, _ = await asyncio.wait_for(
        nchan_receive(
            peer, peer.replay_path(channel), peer.subscribe_headers, LIVE_MESSAGES, established
        ),
        RECEIVE_TIMEOUT_S,
    )
    check_sequence("Nchan ?last_event_id=0:0", numbers, LIVE_MESSAGES)
    say(f"Nchan replay via ?last_event_id=0:0: {len(numbers)} of {LIVE_MESSAGES}")

    # Without Last-Event-ID (`newest`), `: hi` comes before Nchan has subscribed in Redis.
    trials, losing = 20, 0
    for trial in range(trials):
        channel = f"/smoke/nchan-newest-{trial}"
        established = asyncio.Event()
        receiving = asyncio.create_task(
            nchan_receive(
                peer, peer.subscribe_path(channel), peer.subscribe_headers, 5, established
            )
        )
        await asyncio.wait_for(established.wait(), 10)
        await nchan_publish(peer, channel, range(5))
        try:
            numbers, _ = await asyncio.wait_for(receiving, 1.0)
        except TimeoutError:
            numbers = []
        losing += numbers != list(range(5))
    say(
        f"Nchan `newest` (no Last-Event-ID), 5 messages published as soon as `: hi` came:"
        f" {losing} of {trials} subscribers missed some (hence live_headers)"
    )

    channel = "/smoke/nchan-replay"
    started = time.monotonic()
    share = REPLAY_MESSAGES // PUBLISH_CONNECTIONS
    await asyncio.gather(
        *(
            nchan_publish(peer, channel, range(i * share, (i + 1) * share))
            for i in range(PUBLISH_CONNECTIONS)
        )
    )
    published_s = time.monotonic() - started
    started = time.monotonic()
    numbers, ids = await asyncio.wait_for(
        nchan_receive(
            peer,
            peer.subscribe_path(channel),
            peer.replay_headers(),
            REPLAY_MESSAGES,
            asyncio.Event(),
        ),
        REPLAY_TIMEOUT_S,
    )
    replayed_s = time.monotonic() - started
    check_sequence("Nchan replay", sorted(numbers), REPLAY_MESSAGES)
    for i in range(PUBLISH_CONNECTIONS):  # each publisher's own messages come in its order
        own = [n for n in numbers if i * share <= n < (i + 1) * share]
        if own != sorted(own):
            raise SmokeFailure(f"Nchan replay: publisher {i}'s messages out of order")
    say(
        f"Nchan replay: published {REPLAY_MESSAGES} over {PUBLISH_CONNECTIONS} connections in"
        f" {published_s:.1f} s ({REPLAY_MESSAGES / published_s:.0f}/s); Last-Event-ID: 0:0"
        f" replayed {len(numbers)} from the oldest in {replayed_s:.1f} s"
        f" ({len(numbers) / replayed_s:.0f}/s), no duplicates"
    )


# -- Faye -------------------------------------------------------------------------------------


async def bayeux(connection: Connection, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    answer = await connection.request(
        "POST", FayePeer.bayeux_path, dict(FayePeer.headers), json.dumps(messages).encode()
    )
    if answer.status != 200:
        raise SmokeFailure(f"Faye answered {answer.status}: {answer.body[:200]!r}")
    replies: list[dict[str, Any]] = json.loads(answer.body)
    return replies


class BayeuxSubscriber:
    """A Bayeux long-polling client of Faye: handshake and subscribe on one connection, the
    /meta/connect long-polls on another."""

    def __init__(self, peer: FayePeer, channel: str) -> None:
        self.channel = channel
        self._control = Connection(peer.base_url)
        self._polls = Connection(peer.base_url)
        self.client_id = ""

    async def open(self) -> BayeuxSubscriber:
        await self._control.open()
        await self._polls.open()
        [handshake] = await bayeux(self._control, FayePeer.handshake())
        if not handshake.get("successful"):
            raise SmokeFailure(f"Faye handshake refused: {handshake}")
        self.client_id = str(handshake["clientId"])
        [subscribed] = await bayeux(self._control, FayePeer.subscribe(self.client_id, self.channel))
        if not subscribed.get("successful"):
            raise SmokeFailure(f"Faye subscribe refused: {subscribed}")
        return self

    async def poll(self, timeout_ms: int | None = None) -> list[int]:
        """One /meta/connect: the reply to it comes first, then the messages it carries."""
        replies = await bayeux(self._polls, FayePeer.connect(self.client_id, timeout_ms))
        connect, *messages = replies
        if connect.get("channel") != "/meta/connect" or not connect.get("successful"):
            raise SmokeFailure(f"Faye /meta/connect refused: {replies}")
        return [int(m["data"]["n"]) for m in messages if m.get("channel") == self.channel]

    async def close(self) -> bool:
        [reply] = await bayeux(self._control, FayePeer.disconnect(self.client_id))
        self._control.close()
        self._polls.close()
        return bool(reply.get("successful"))


async def faye_publish(connection: Connection, channel: str, n: int) -> None:
    [reply] = await bayeux(connection, FayePeer.publish(channel, json.loads(payload(n))))
    if not reply.get("successful"):
        raise SmokeFailure(f"Faye publish refused: {reply}")


async def smoke_faye(peer: FayePeer) -> None:
    publisher = await Connection(peer.base_url).open()
    try:
        # Paced: each message published while the subscriber's long-poll waits, the next only
        # once it came. Faye must deliver every one.
        subscriber = await BayeuxSubscriber(peer, "/smoke/faye-paced").open()
        numbers: list[int] = []
        started = time.monotonic()
        for n in range(LIVE_MESSAGES):
            polling = asyncio.create_task(subscriber.poll())
            await faye_publish(publisher, subscriber.channel, n)
            numbers += await asyncio.wait_for(polling, RECEIVE_TIMEOUT_S)
        elapsed = time.monotonic() - started
        closed = await subscriber.close()
        check_sequence("Faye paced", numbers, LIVE_MESSAGES)
        say(
            f"Faye paced: published {LIVE_MESSAGES} (no handshake), the long-polling subscriber"
            f" received {len(numbers)} in order in {elapsed:.2f} s; disconnect"
            f" {'ok' if closed else 'refused'}"
        )

        # Burst: published back to back while the subscriber polls. faye-redis 0.2.0 loses some
        # (README.md, "Faye loses messages"): count them, require order and no duplicates.
        subscriber = await BayeuxSubscriber(peer, "/smoke/faye-burst").open()
        numbers = []

        async def receive() -> None:
            while True:  # held long-polls (a short advice.timeout is lossy itself: README)
                numbers.extend(await subscriber.poll())

        receiving = asyncio.create_task(receive())
        for n in range(LIVE_MESSAGES):
            await faye_publish(publisher, subscriber.channel, n)
        seen = -1
        while len(numbers) < LIVE_MESSAGES and len(numbers) != seen:
            seen = len(numbers)
            await asyncio.sleep(2.0)  # until two seconds pass with nothing more
        receiving.cancel()
        with suppress(asyncio.CancelledError):
            await receiving
        await subscriber.close()
    finally:
        publisher.close()
    if not numbers or numbers != sorted(set(numbers)):
        raise SmokeFailure(f"Faye burst: {len(numbers)} received, duplicated or out of order")
    lost = sorted(set(range(LIVE_MESSAGES)) - set(numbers))
    say(
        f"Faye burst: published {LIVE_MESSAGES} back to back, the long-polling subscriber"
        f" received {len(numbers)} in order, lost {len(lost)} {lost[:12]}"
        f"{'...' if len(lost) > 12 else ''} (faye-redis delivery race, README.md)"
    )


def main() -> int:
    cpu = max(os.sched_getaffinity(0))
    with running_redis() as redis:
        say(f"redis-server on {redis.url}")
        with running_nchan(redis.url, cpu) as nchan:
            say(
                f"Nchan {nchan.version} at {nchan.base_url}: master {nchan.master_pid}, worker"
                f" {nchan.pid} on cores {sorted(os.sched_getaffinity(nchan.pid))}"
            )
            try:
                asyncio.run(smoke_nchan(nchan))
            except (SmokeFailure, TimeoutError) as failure:
                print(f"FAILED: {failure!r}\n{nchan.error_log()}", file=sys.stderr)
                return 1
        with running_faye(redis.url, cpu) as faye:
            described = ", ".join(f"{name} {version}" for name, version in faye.versions.items())
            url = f"{faye.base_url}{faye.bayeux_path}"
            say(
                f"Faye ({described}; node {faye.node_version}) at {url}: pid {faye.pid} on"
                f" cores {sorted(os.sched_getaffinity(faye.pid))}"
            )
            try:
                asyncio.run(smoke_faye(faye))
            except (SmokeFailure, TimeoutError) as failure:
                print(f"FAILED: {failure!r}", file=sys.stderr)
                return 1
    say("smoke passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
