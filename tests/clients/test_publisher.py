"""`replaybus_client.Publisher` and `SyncPublisher` against a real server.

Requests are counted with a recording httpx transport (the client's real connection pool, with
every request and its outcome noted) and checked against what the server stored (the history
API). Connection loss is real: a TCP proxy between client and server cuts the connection after
the server has received the request and begun to answer.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import httpx
import pytest
from replaybus_client import (
    Ack,
    ClientCredentials,
    Publisher,
    RequestFailed,
    StaticToken,
    SyncPublisher,
    TokenSource,
)

from tests.clients.support import (
    RecordingTransport,
    answer_losing_proxy,
    create_client,
    create_tenant,
    define_channel,
    history,
    port_of,
)
from tests.e2e.server import RunningServer
from tests.e2e.sse import channel_name


def _credentials(server: RunningServer) -> ClientCredentials:
    return ClientCredentials(server.base_url, server.client_id, server.client_secret)


def _stored(events: list[dict[str, Any]]) -> list[tuple[int, str, str, object]]:
    return [(e["replayId"], e["uuid"], e["createdDate"], e["payload"]) for e in events]


def _acked(acks: list[Ack], payloads: list[dict[str, Any]]) -> list[tuple[int, str, str, object]]:
    return [(a.replay_id, a.uuid, a.created_date, p) for a, p in zip(acks, payloads, strict=True)]


async def test_single_and_batch_acks_match_the_history(server: RunningServer) -> None:
    channel = channel_name()
    payloads: list[dict[str, Any]] = [{"n": n, "text": f"event {n}"} for n in range(4)]
    async with Publisher(server.base_url, _credentials(server)) as publisher:
        single = await publisher.publish(channel, payloads[0])
        batch = await publisher.publish_batch(channel, payloads[1:])
    acks = [single, *batch]
    assert _stored(history(server, channel)) == _acked(acks, payloads)
    assert all(ack.channel == channel and not ack.duplicate for ack in acks)
    assert [ack.replay_id for ack in acks] == sorted({ack.replay_id for ack in acks})


@pytest.mark.parametrize("batch", [False, True], ids=["single", "batch"])
async def test_an_answer_lost_after_the_server_stored_the_event_is_retried_with_the_same_key(
    server: RunningServer, batch: bool
) -> None:
    """The proxy cuts the first connection as soon as the server starts answering: the event is
    stored but the client sees a dropped connection. The retry must repeat the Idempotency-Key,
    so the server answers `duplicate` and the channel holds each event once."""
    channel = channel_name()
    token = server.token()  # obtained directly, so the first connection carries the publish
    recorder = RecordingTransport()
    with answer_losing_proxy(port_of(server), lose=1) as proxy:
        url = f"http://127.0.0.1:{proxy.port}"
        async with (
            httpx.AsyncClient(transport=recorder, timeout=30) as http,
            Publisher(url, StaticToken(token), http=http) as publisher,
        ):
            if batch:
                acks = await publisher.publish_batch(channel, [{"n": 1}, {"n": 2}])
            else:
                acks = [await publisher.publish(channel, {"n": 1})]
        assert proxy.lost == 1
    posts = recorder.posts(f"/v1/events{channel}")
    assert [(post.error is not None, post.status) for post in posts] == [(True, None), (False, 201)]
    keys = {post.headers.get("idempotency-key") for post in posts}
    assert len(keys) == 1
    assert None not in keys
    assert all(ack.duplicate for ack in acks)  # the first attempt had stored them
    stored = history(server, channel)
    assert [e["replayId"] for e in stored] == [ack.replay_id for ack in acks]
    assert [e["payload"] for e in stored] == [{"n": n + 1} for n in range(len(acks))]


async def test_a_lost_answer_to_the_token_request_is_retried_like_any_lost_connection(
    server: RunningServer,
) -> None:
    """The same cut, with the usual ClientCredentials: the client's first connection carries
    its token request, so that is the answer lost. The Publisher retries lost connections;
    the publish must still succeed, storing the event once."""
    channel = channel_name()
    recorder = RecordingTransport()
    with answer_losing_proxy(port_of(server), lose=1) as proxy:
        url = f"http://127.0.0.1:{proxy.port}"
        tokens = ClientCredentials(url, server.client_id, server.client_secret)
        async with (
            httpx.AsyncClient(transport=recorder, timeout=30) as http,
            Publisher(url, tokens, http=http) as publisher,
        ):
            ack = await publisher.publish(channel, {"n": 1})
        assert proxy.lost == 1
    assert recorder.exchanges[0].path == "/v1/oauth/token"
    assert recorder.exchanges[0].error is not None
    assert [e["replayId"] for e in history(server, channel)] == [ack.replay_id]


async def test_429_is_retried_after_the_servers_retry_after(server: RunningServer) -> None:
    tenant = create_tenant(server, {"publishRate": 1, "publishBurst": 1})
    client_id, secret = create_client(server, tenant, ["publish", "subscribe"])
    channel = channel_name()
    recorder = RecordingTransport()
    async with (
        httpx.AsyncClient(transport=recorder, timeout=30) as http,
        Publisher(
            server.base_url, ClientCredentials(server.base_url, client_id, secret), http=http
        ) as publisher,
    ):
        first = await publisher.publish(channel, {"n": 1})
        started = time.monotonic()
        second = await publisher.publish(channel, {"n": 2})  # the burst is spent: 429 first
        elapsed = time.monotonic() - started
    posts = recorder.posts(f"/v1/events{channel}")
    assert [post.status for post in posts] == [201, 429, 201]
    asked = posts[1].retry_after
    assert asked is not None
    assert float(asked) > 0
    # The retry waited what the server asked (a retry before that would have been 429 again).
    assert elapsed >= float(asked)
    assert posts[1].headers["idempotency-key"] == posts[2].headers["idempotency-key"]
    own = dataclasses.replace(server, client_id=client_id, client_secret=secret)
    stored = history(own, channel)
    assert [e["replayId"] for e in stored] == [first.replay_id, second.replay_id]


SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["orderId"],
    "properties": {"orderId": {"type": "integer"}},
}


async def test_a_schema_violation_raises_request_failed_without_retrying(
    server: RunningServer,
) -> None:
    channel = channel_name()
    define_channel(server, "default", channel, SCHEMA)
    recorder = RecordingTransport()
    async with (
        httpx.AsyncClient(transport=recorder, timeout=30) as http,
        Publisher(server.base_url, _credentials(server), http=http) as publisher,
    ):
        with pytest.raises(RequestFailed) as refused:
            await publisher.publish(channel, {"orderId": "A1"})
        accepted = await publisher.publish(channel, {"orderId": 1})
    assert refused.value.status == 400
    assert refused.value.code == "schema_violation"
    assert refused.value.details["error"] == "schema_violation"
    assert refused.value.details["violations"]
    assert [post.status for post in recorder.posts(f"/v1/events{channel}")] == [400, 201]
    assert [e["replayId"] for e in history(server, channel)] == [accepted.replay_id]


@pytest.mark.parametrize(
    ("scope", "channel", "code"),
    [
        ("subscribe", channel_name(), "insufficient_scope"),
        (None, "/data/Not_An_Event__e", "channel_not_publishable"),
    ],
    ids=["token-without-publish-scope", "channel-outside-event"],
)
async def test_403_raises_request_failed_without_retrying(
    server: RunningServer, scope: str | None, channel: str, code: str
) -> None:
    recorder = RecordingTransport()
    async with (
        httpx.AsyncClient(transport=recorder, timeout=30) as http,
        Publisher(server.base_url, StaticToken(server.token(scope)), http=http) as publisher,
    ):
        with pytest.raises(RequestFailed) as refused:
            await publisher.publish(channel, {"n": 1})
    assert (refused.value.status, refused.value.code) == (403, code)
    assert [post.status for post in recorder.posts(f"/v1/events{channel}")] == [403]


class _StaleFirst(TokenSource):
    """Hands out a token the server refuses until told (invalidate) that it was refused."""

    def __init__(self, valid: str) -> None:
        self._valid = valid
        self.invalidated = 0
        self.handed: list[str] = []

    async def token(self, http: httpx.AsyncClient) -> str:
        token = "stale-token" if self.invalidated == 0 else self._valid
        self.handed.append(token)
        return token

    def invalidate(self) -> None:
        self.invalidated += 1


async def test_a_refused_token_is_refreshed_once(server: RunningServer) -> None:
    channel = channel_name()
    tokens = _StaleFirst(server.token())
    recorder = RecordingTransport()
    async with (
        httpx.AsyncClient(transport=recorder, timeout=30) as http,
        Publisher(server.base_url, tokens, http=http) as publisher,
    ):
        ack = await publisher.publish(channel, {"n": 1})
    assert tokens.invalidated == 1
    assert tokens.handed == ["stale-token", tokens.handed[1]]
    assert [post.status for post in recorder.posts(f"/v1/events{channel}")] == [401, 201]
    assert [e["replayId"] for e in history(server, channel)] == [ack.replay_id]


def _in_threads(count: int, work: Any) -> list[Any]:
    """Runs `work(index)` on `count` plain threads at once; their results (or exceptions)."""
    results: list[Any] = [None] * count
    start = threading.Barrier(count)

    def run(index: int) -> None:
        start.wait()
        try:
            results[index] = work(index)
        except BaseException as error:  # reported by the assertion below
            results[index] = error

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads), "a publishing thread hung"
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def test_sync_publisher_from_a_plain_thread(server: RunningServer) -> None:
    channel = channel_name()
    with SyncPublisher(server.base_url, server.client_id, server.client_secret) as publisher:

        def work(index: int) -> list[Ack]:
            return [
                publisher.publish(channel, {"n": 0}),
                *publisher.publish_batch(channel, [{"n": 1}, {"n": 2}]),
            ]

        [acks] = _in_threads(1, work)
    assert _stored(history(server, channel)) == _acked(acks, [{"n": n} for n in range(3)])


def test_sync_publisher_from_several_threads_at_once(server: RunningServer) -> None:
    channel = channel_name()
    threads, each = 8, 10
    with SyncPublisher(server.base_url, server.client_id, server.client_secret) as publisher:

        def work(index: int) -> list[Ack]:
            return [publisher.publish(channel, {"t": index, "n": n}) for n in range(each)]

        results: list[list[Ack]] = _in_threads(threads, work)
    stored = {e["replayId"]: e["payload"] for e in history(server, channel)}
    assert len(stored) == threads * each
    for index, acks in enumerate(results):
        # Each thread's events are stored once, in the order it published them.
        expected = [{"t": index, "n": n} for n in range(each)]
        assert [stored[ack.replay_id] for ack in acks] == expected
        assert [ack.replay_id for ack in acks] == sorted(ack.replay_id for ack in acks)
