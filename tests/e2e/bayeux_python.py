"""aiosfstream-ng (on aiocometd-ng) pointed at a replaybus server: an authenticator for its
client-credentials token endpoint, and the client on API version 58.0 (aiosfstream hard-codes
45.0, which predates `EventUuid`). See `test_python_cometd.py` for why this library."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import aiohttp
from aiocometd_ng.typing import Headers, JsonObject, Payload
from aiosfstream_ng.auth import AuthenticatorBase
from aiosfstream_ng.client import Client

from tests.e2e.bayeux_publish import API_VERSION, tampered
from tests.e2e.server import RunningServer

__all__ = ["ClientCredentials", "StreamingClient", "receive"]


class ClientCredentials(AuthenticatorBase):
    """OAuth 2.0 client credentials against `POST /services/oauth2/token`.

    aiosfstream sends `<token_type> <access_token>` (here `Bearer …`) on every request and calls
    `authenticate()` again after a 401/403 reply. As the auth extension it sees every request
    and reply payload, so it also keeps a copy of each message (`sent`, `received`): the wire
    exchange as the client saw it. With `tamper`, the token it hands out does not verify."""

    def __init__(self, server: RunningServer, *, tamper: bool = False) -> None:
        super().__init__()
        self._server = server
        self._tamper = tamper
        self.authentications = 0
        self.sent: list[JsonObject] = []
        self.received: list[JsonObject] = []

    async def _authenticate(self) -> tuple[int, JsonObject]:
        self.authentications += 1
        form = {
            "grant_type": "client_credentials",
            "client_id": self._server.client_id,
            "client_secret": self._server.client_secret,
        }
        url = f"{self._server.base_url}/services/oauth2/token"
        async with aiohttp.ClientSession() as session, session.post(url, data=form) as response:
            data: JsonObject = await response.json()
            if self._tamper and response.status == 200:
                data["access_token"] = tampered(data["access_token"])
            return response.status, data

    async def outgoing(self, payload: Payload, headers: Headers) -> None:
        await super().outgoing(payload, headers)
        self.sent.extend(copy.deepcopy(message) for message in payload)

    async def incoming(self, payload: Payload, headers: Headers | None = None) -> None:
        self.received.extend(copy.deepcopy(message) for message in payload)

    def replies(self, channel: str) -> list[JsonObject]:
        return [message for message in self.received if message.get("channel") == channel]

    def requests(self, channel: str) -> list[JsonObject]:
        return [message for message in self.sent if message.get("channel") == channel]


class StreamingClient(Client):
    """aiosfstream's client on `/cometd/58.0` instead of its fixed `/cometd/45.0`."""

    @staticmethod
    def get_cometd_url(instance_url: str) -> str:
        return f"{instance_url}/cometd/{API_VERSION}"


async def receive(client: Client, count: int, timeout: float) -> list[dict[str, Any]]:
    """The next `count` delivered messages, failing after `timeout` seconds."""
    messages: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while len(messages) < count:
            messages.append(await client.receive())
    return messages
