"""How the generator drives each server: replaybus (REST publish, SSE, Bayeux), the bare
Starlette endpoint and the do-nothing server (publish only)."""

from __future__ import annotations

from typing import Any

import orjson

from loadtests.bench.generator import Connection
from loadtests.bench.scenarios import BayeuxSession, Target, event_payload
from loadtests.bench.servers import Server

__all__ = ["publish_only", "replaybus_target"]


def publish_only(server: Server, channel: str) -> Target:
    path = f"/v1/events{channel}"
    headers = {"Content-Type": "application/json"}
    return Target(
        server.name,
        server.base_url,
        server.pid,
        publish=lambda connection, n: connection.prepare("POST", path, headers, event_payload(n)),
    )


class _ReplaybusBayeux(BayeuxSession):
    def __init__(self, base_url: str, token: str, channel: str) -> None:
        self._base_url = base_url
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self._channel = channel
        self._connection: Connection | None = None
        self._client_id = ""

    async def _post(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        assert self._connection is not None
        request = self._connection.prepare(
            "POST", "/cometd/58.0", self._headers, orjson.dumps(messages)
        )
        response = await self._connection.send(request)
        if response.status != 200:
            raise RuntimeError(f"Bayeux answered {response.status}: {response.body[:200]!r}")
        replies: list[dict[str, Any]] = orjson.loads(response.body)
        return replies

    async def open(self) -> _ReplaybusBayeux:
        self._connection = await Connection(self._base_url).open()
        handshake = {
            "channel": "/meta/handshake",
            "version": "1.0",
            "supportedConnectionTypes": ["long-polling"],
        }
        [reply] = await self._post([handshake])
        if not reply.get("successful"):
            raise RuntimeError(f"handshake refused: {reply}")
        self._client_id = reply["clientId"]
        subscribe = {
            "channel": "/meta/subscribe",
            "clientId": self._client_id,
            "subscription": self._channel,
        }
        [reply] = await self._post([subscribe])
        if not reply.get("successful"):
            raise RuntimeError(f"subscribe refused: {reply}")
        return self

    async def connect(self) -> list[dict[str, Any]]:
        connect = {
            "channel": "/meta/connect",
            "clientId": self._client_id,
            "connectionType": "long-polling",
        }
        replies = await self._post([connect])
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
    publish_headers = {**auth, "Content-Type": "application/json"}
    path = f"/v1/events{channel}"

    def sse(connection: Connection, start: int) -> bytes:
        return connection.prepare("GET", f"/v1/stream{channel}?replayId={start}", auth)

    async def bayeux() -> BayeuxSession:
        return await _ReplaybusBayeux(server.base_url, token, channel).open()

    return Target(
        server.name,
        server.base_url,
        server.pid,
        publish=lambda connection, n: connection.prepare(
            "POST", path, publish_headers, event_payload(n)
        ),
        sse_request=sse,
        bayeux=bayeux,
    )
