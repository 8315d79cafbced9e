"""How the generator drives each server: replaybus (REST publish, SSE, Bayeux), the bare
Starlette endpoint and the do-nothing server (publish only)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from loadtests.bench.generator import Connection
from loadtests.bench.peers import FayePeer, NchanPeer
from loadtests.bench.scenarios import BayeuxSession, Target, event_payload
from loadtests.bench.servers import Server

__all__ = ["faye_target", "nchan_target", "publish_and_stream", "publish_only", "replaybus_target"]

_BAYEUX_RETRIES = 20
_BAYEUX_RETRY_PAUSE_S = 0.5


def publish_only(server: Server, channel: str) -> Target:
    path = f"/v1/events{channel}"
    headers = {"Content-Type": "application/json"}
    return Target(
        server.name,
        server.base_url,
        server.pid,
        publish=lambda connection, n: connection.prepare("POST", path, headers, event_payload(n)),
    )


def publish_and_stream(server: Server, channel: str) -> Target:
    """A server with just a publish endpoint and `GET /stream` (the do-nothing server, whose
    stream carries what is published; the bare Starlette app, whose stream stays idle)."""
    target = publish_only(server, channel)
    target.sse_request = lambda connection, start: connection.prepare("GET", "/stream")
    return target


class _LongPolling(BayeuxSession):
    """One Bayeux long-polling session on one keep-alive connection: handshake, subscribe,
    then held connects. The messages are plain Bayeux (the builders live with the Faye peer,
    which speaks nothing else); a 503 is retried as CometD clients do: after a pause, with the
    same clientId, a bounded number of times."""

    def __init__(self, base_url: str, path: str, headers: dict[str, str], channel: str) -> None:
        self._base_url = base_url
        self._path = path
        self._headers = headers
        self._channel = channel
        self._connection: Connection | None = None
        self._client_id = ""

    async def _post(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        assert self._connection is not None
        request = self._connection.prepare(
            "POST", self._path, self._headers, orjson.dumps(messages)
        )
        for _ in range(_BAYEUX_RETRIES):
            response = await self._connection.send(request)
            if response.status != 503:
                break
            await asyncio.sleep(_BAYEUX_RETRY_PAUSE_S)
        if response.status != 200:
            raise RuntimeError(f"Bayeux answered {response.status}: {response.body[:200]!r}")
        replies: list[dict[str, Any]] = orjson.loads(response.body)
        return replies

    async def open(self) -> _LongPolling:
        self._connection = await Connection(self._base_url).open()
        [reply] = await self._post(FayePeer.handshake())
        if not reply.get("successful"):
            raise RuntimeError(f"handshake refused: {reply}")
        self._client_id = reply["clientId"]
        [reply] = await self._post(FayePeer.subscribe(self._client_id, self._channel))
        if not reply.get("successful"):
            raise RuntimeError(f"subscribe refused: {reply}")
        return self

    async def connect(self) -> list[dict[str, Any]]:
        replies = await self._post(FayePeer.connect(self._client_id))
        return [
            message["data"]
            for message in replies
            if message.get("channel") == self._channel and isinstance(message.get("data"), dict)
        ]

    async def close(self) -> None:
        if self._connection is not None:
            self._connection.close()


def replaybus_target(server: Server, channel: str) -> Target:
    token = server.token()
    auth = {"Authorization": f"Bearer {token}"}
    json_headers = {**auth, "Content-Type": "application/json"}
    path = f"/v1/events{channel}"

    def sse(connection: Connection, start: int) -> bytes:
        return connection.prepare("GET", f"/v1/stream{channel}?replayId={start}", auth)

    async def bayeux() -> BayeuxSession:
        return await _LongPolling(server.base_url, "/cometd/58.0", json_headers, channel).open()

    return Target(
        server.name,
        server.base_url,
        server.pid,
        publish=lambda connection, n: connection.prepare(
            "POST", path, json_headers, event_payload(n)
        ),
        sse_request=sse,
        bayeux=bayeux,
    )


def nchan_target(peer: NchanPeer, channel: str) -> Target:
    """Publish by POSTing the payload; subscribe over EventSource. "New events" starts from the
    channel's last message id (a bare subscription can miss the first messages: peers/README)."""
    publish_path = peer.publish_path(channel)
    subscribe_path = peer.subscribe_path(channel)

    def sse(connection: Connection, start: int) -> bytes:
        headers = peer.replay_headers() if start == -2 else peer.live_headers(channel)
        return connection.prepare("GET", subscribe_path, headers)

    return Target(
        "Nchan+Redis",
        peer.base_url,
        peer.pid,
        publish=lambda connection, n: connection.prepare(
            "POST", publish_path, {"Content-Type": "application/json"}, event_payload(n)
        ),
        sse_request=sse,
    )


def faye_target(peer: FayePeer, channel: str) -> Target:
    """Publish a Bayeux message by POST (Faye needs no handshake for it); subscribe with
    handshake, subscribe and held connects. Faye keeps no history: no replay."""

    def publish(connection: Connection, n: int) -> bytes:
        body = b'[{"channel":"' + channel.encode() + b'","data":' + event_payload(n) + b"}]"
        return connection.prepare("POST", FayePeer.bayeux_path, FayePeer.headers, body)

    async def bayeux() -> BayeuxSession:
        headers = dict(FayePeer.headers)
        return await _LongPolling(peer.base_url, FayePeer.bayeux_path, headers, channel).open()

    return Target("Faye+Redis", peer.base_url, peer.pid, publish=publish, bayeux=bayeux)
