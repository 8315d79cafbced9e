"""An in-process replaybus node (memory engine and catalog) driven over ASGI, with helpers for
the administration API, tokens, REST, SSE and Bayeux."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
from starlette.applications import Starlette

from api.app import create_app
from app.admin import tenant_id_reuse_delay
from app.clock import Clock
from app.settings import Settings

__all__ = [
    "CACHE_TTL",
    "OPERATOR_KEY",
    "TENANT_ID_REUSE_DELAY",
    "Node",
    "Refusal",
    "bearer",
    "error_code",
    "running_node",
]

OPERATOR_KEY = "o" * 24
#: The longest cache TTL there is: whatever takes effect at once does so through the admin
#: service forgetting what it changed on its own node, not through entries expiring.
CACHE_TTL = 300.0
#: How long a deleted tenant's id rests before it can be created again (`app.admin`).
TENANT_ID_REUSE_DELAY = tenant_id_reuse_delay(Settings(catalog_cache_ttl=CACHE_TTL))
_STREAM_BOUND_S = 10.0  # a safety net for a stream that never ends, far above any real wait
Refusal = tuple[int, str]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _error(response: httpx.Response) -> str:
    body = response.json()
    assert isinstance(body, dict), body
    return str(body.get("error"))


class Node:
    """One app, one HTTP client, and shortcuts for what the tests do over and over."""

    def __init__(self, app: Starlette, http: httpx.AsyncClient) -> None:
        self.app = app
        self.http = http
        self.operator = bearer(OPERATOR_KEY)

    def caller(self, address: str) -> httpx.AsyncClient:
        """Another HTTP client of the app, whose requests come from `address` (plain HTTP)."""
        transport = httpx.ASGITransport(app=self.app, client=(address, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1")

    # -- administration --------------------------------------------------------------------

    async def admin(
        self,
        method: str,
        path: str,
        body: object = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """`method /v1/admin<path>`, as the operator unless other headers are given."""
        return await self.http.request(
            method,
            "/v1/admin" + path,
            json=body,
            headers=self.operator if headers is None else headers,
        )

    async def create_tenant(self, tenant: str, settings: dict[str, Any] | None = None) -> None:
        body: dict[str, Any] = {"tenantId": tenant}
        if settings is not None:
            body["settings"] = settings
        response = await self.admin("POST", "/tenants", body)
        assert response.status_code == 201, response.text

    async def create_client(
        self, tenant: str, scopes: list[str], client_id: str | None = None
    ) -> dict[str, Any]:
        """The issued client (with its `clientSecret`), created by the operator."""
        body: dict[str, Any] = {"scopes": scopes}
        if client_id is not None:
            body["clientId"] = client_id
        response = await self.admin("POST", f"/tenants/{tenant}/clients", body)
        assert response.status_code == 201, response.text
        issued: dict[str, Any] = response.json()
        return issued

    async def set_suspended(self, tenant: str, suspended: bool) -> None:
        action = "suspend" if suspended else "resume"
        response = await self.admin("POST", f"/tenants/{tenant}/{action}")
        assert response.status_code == 200, response.text
        assert response.json()["suspended"] is suspended

    # -- tokens ----------------------------------------------------------------------------

    async def token_response(self, client_id: str, secret: str) -> httpx.Response:
        form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
        return await self.http.post("/v1/oauth/token", data=form)

    async def token(self, client_id: str, secret: str) -> str:
        response = await self.token_response(client_id, secret)
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    async def client_token(self, tenant: str, scopes: list[str]) -> str:
        """A token of a new client of `tenant` with `scopes`."""
        issued = await self.create_client(tenant, scopes)
        return await self.token(issued["clientId"], issued["clientSecret"])

    # -- REST ------------------------------------------------------------------------------

    async def publish(
        self, token: str, channel: str, payload: dict[str, Any] | None = None
    ) -> httpx.Response:
        return await self.http.post(
            "/v1/events" + channel, json=payload or {"n": 1}, headers=bearer(token)
        )

    async def history(self, token: str, channel: str) -> httpx.Response:
        return await self.http.get("/v1/events" + channel, headers=bearer(token))

    async def window(self, token: str, channel: str) -> httpx.Response:
        return await self.http.get("/v1/channels" + channel, headers=bearer(token))

    async def sobject(self, token: str, name: str) -> httpx.Response:
        return await self.http.post(
            f"/services/data/v58.0/sobjects/{name}", json={"n": 1}, headers=bearer(token)
        )

    async def history_events(self, token: str, channel: str) -> list[dict[str, Any]]:
        response = await self.history(token, channel)
        assert response.status_code == 200, response.text
        events: list[dict[str, Any]] = response.json()["events"]
        return events

    # -- SSE -------------------------------------------------------------------------------

    async def stream_status(self, token: str, channel: str) -> Refusal:
        """Open `GET /v1/stream<channel>` straight on the ASGI app and disconnect as soon as the
        response starts: (status, `error` code of a refusal, or "" for an opened stream).

        httpx's ASGI transport waits for the whole response, which never comes for a stream
        that opened; here the client goes away once the status is known, so it ends either way.
        """
        async with hold_stream(self, token, channel) as start:
            return start.status, start.error

    # -- Bayeux ----------------------------------------------------------------------------

    async def bayeux(self, token: str, message: dict[str, Any]) -> dict[str, Any]:
        """The reply to one Bayeux message posted to `/cometd/58.0`."""
        response = await self.http.post("/cometd/58.0", json=[message], headers=bearer(token))
        assert response.status_code == 200, response.text
        replies = response.json()
        assert isinstance(replies, list), replies
        assert len(replies) == 1, replies
        reply: dict[str, Any] = replies[0]
        return reply

    async def handshake(self, token: str) -> dict[str, Any]:
        return await self.bayeux(
            token,
            {
                "channel": "/meta/handshake",
                "version": "1.0",
                "supportedConnectionTypes": ["long-polling"],
            },
        )

    async def subscribe(self, token: str, client_id: str, subscription: str) -> dict[str, Any]:
        return await self.bayeux(
            token,
            {"channel": "/meta/subscribe", "clientId": client_id, "subscription": subscription},
        )

    async def bayeux_session(self, token: str) -> str:
        """The clientId of a successful handshake."""
        reply = await self.handshake(token)
        assert reply["successful"] is True, reply
        return str(reply["clientId"])


def error_code(response: httpx.Response) -> str:
    """The `error` code of a native JSON error response."""
    return _error(response)


@asynccontextmanager
async def running_node(clock: Clock | None = None, **overrides: Any) -> AsyncIterator[Node]:
    settings = Settings(
        **{
            "operator_key": OPERATOR_KEY,
            "catalog_cache_ttl": CACHE_TTL,
            "access_log": False,
            **overrides,
        }
    )
    app = create_app(settings, clock=clock)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http,
    ):
        yield Node(app, http)


# -- streams held open -----------------------------------------------------------------------

__all__ += ["StreamStart", "hold_stream"]


def stream_scope(channel: str, token: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """The ASGI scope of `GET /v1/stream{channel}` with a bearer token (and `headers`)."""
    path = "/v1/stream" + channel
    raw_headers = [(b"authorization", f"Bearer {token}".encode())]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": raw_headers,
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1234),
    }


class StreamStart:
    """How `GET /v1/stream<channel>` began: its status and headers (names in lower case), and
    for a refusal (which ends by itself) the whole body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def error(self) -> str:
        """The `error` code of a refusal, "" for an opened stream."""
        if self.status == 200:
            return ""
        return _error(httpx.Response(self.status, content=self.body))


@asynccontextmanager
async def hold_stream(
    node: Node, token: str, channel: str, headers: dict[str, str] | None = None
) -> AsyncIterator[StreamStart]:
    """Open `GET /v1/stream<channel>` straight on the ASGI app and keep it open for the body of
    the `async with`: it yields once the response has started (so an opened stream holds its
    subscriber lease from then on). On leaving, the client disconnects and the app's handling of
    the request is awaited to its end, so whatever the stream held is released by then."""
    started = asyncio.Event()
    leave = asyncio.Event()
    status: list[int] = []
    start_headers: dict[str, str] = {}
    body: list[bytes] = []
    requested = False

    async def receive() -> MutableMapping[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await leave.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])
            for name, value in message.get("headers", []):
                start_headers[bytes(name).decode("latin-1").lower()] = bytes(value).decode(
                    "latin-1"
                )
            started.set()
        elif message["type"] == "http.response.body":
            body.append(message.get("body", b""))

    scope = stream_scope(channel, token, headers)
    handling = asyncio.create_task(node.app(scope, receive, send))
    try:
        waiting = asyncio.create_task(started.wait())
        try:
            async with asyncio.timeout(_STREAM_BOUND_S):
                await asyncio.wait({waiting, handling}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
        if handling.done() and not started.is_set():
            handling.result()  # raises what the app raised
            raise AssertionError("the stream ended without starting a response")
        if status[0] != 200:
            leave.set()
            async with asyncio.timeout(_STREAM_BOUND_S):
                await handling  # a refusal ends by itself: its body is complete
        yield StreamStart(status[0], dict(start_headers), b"".join(body))
    finally:
        leave.set()
        async with asyncio.timeout(_STREAM_BOUND_S):
            await handling
