"""What the attacks are made of: A's HTTP clients and raw connections, workers repeating a move
until cancelled, and Bayeux sessions. Every answer A gets goes through `Arena.check`."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import httpx

from tests.harness import bayeux_http
from tests.hostile.arena import Arena

__all__ = [
    "add_clients",
    "answer",
    "bayeux",
    "client",
    "connection",
    "discard",
    "get",
    "hold_many",
    "raw",
    "request",
    "session",
    "status",
    "token_for",
    "workers",
]

_LIMITS = httpx.Limits(max_connections=200, max_keepalive_connections=200)
#: One TLS context for every client of A's (the node speaks plain HTTP): building one per
#: client reads the CA bundle each time, tens of milliseconds of A's CPU.
_TLS = ssl.create_default_context()


@asynccontextmanager
async def client(arena: Arena) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=arena.base_url, timeout=httpx.Timeout(60.0), limits=_LIMITS, verify=_TLS
    ) as http:
        yield http


async def workers(
    arena: Arena, count: int, work: Callable[[httpx.AsyncClient, int], Awaitable[None]]
) -> None:
    """`count` copies of `work(http, index)`, each repeated until cancelled with an HTTP client
    of its own (many requests at once through one client would hold A back more than the
    node does)."""

    async def forever(index: int) -> None:
        async with client(arena) as http:
            while True:
                await work(http, index)

    await asyncio.gather(*(forever(index) for index in range(count)))


async def request(arena: Arena, http: httpx.AsyncClient, what: str, **kwargs: Any) -> int:
    """One request of A's: its status, or 0 when the connection failed."""
    response = await answer(arena, http, what, **kwargs)
    return 0 if response is None else response.status_code


async def answer(
    arena: Arena, http: httpx.AsyncClient, what: str, **kwargs: Any
) -> httpx.Response | None:
    """One request of A's: its response, or None when the connection failed."""
    try:
        response = await http.request(**kwargs)
    except httpx.TransportError:
        return None
    arena.check(what, response.status_code, response.content)
    return response


@asynccontextmanager
async def connection(
    arena: Arena, head: bytes
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A raw connection of A's that has sent `head`; aborted on leaving."""
    reader, writer = await asyncio.open_connection(*arena.address)
    try:
        writer.write(head)
        yield reader, writer
    finally:
        writer.transport.abort()


async def status(arena: Arena, reader: asyncio.StreamReader, what: str) -> int:
    """The status of the response starting on `reader` (0 if the connection ended first)."""
    try:
        line = await reader.readline()
    except OSError:
        return 0
    parts = line.split()
    code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    if code:
        arena.check(what, code)
    return code


async def hold_many(arena: Arena, heads: Iterable[bytes], what: str, opening: int = 50) -> None:
    """Open a connection per head (`opening` at a time), read each response's status, and hold
    them all open until cancelled (`arena.engaged` once all are open)."""
    async with contextlib.AsyncExitStack() as held:
        gate = asyncio.Semaphore(opening)

        async def one(head: bytes) -> None:
            async with gate:
                try:
                    reader, _ = await held.enter_async_context(connection(arena, head))
                except OSError:
                    return
                await status(arena, reader, what)

        await asyncio.gather(*(one(head) for head in heads))
        arena.engaged.set()
        await asyncio.Event().wait()


def get(path: str, token: str) -> bytes:
    """The head of a GET of `path` with `token`."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: replaybus\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    )


def raw(method: str, path: str, token: str, body: bytes = b"") -> bytes:
    """A whole request (JSON `body`, if any) after which the node closes the connection."""
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: replaybus\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


async def discard(arena: Arena, request: bytes, what: str) -> int:
    """Send a `raw` request and read its whole answer without parsing more than the status
    line: the node pays for every byte it sends, A for next to none, so A's cost does not
    stand in for the node's on a machine they share. The status (0 if the connection failed)."""
    try:
        async with connection(arena, request) as (reader, _):
            code = await status(arena, reader, what)
            while await reader.read(1 << 20):
                pass
    except OSError:
        return 0
    return code


async def bayeux(
    arena: Arena, http: httpx.AsyncClient, what: str, *messages: dict[str, Any]
) -> list[dict[str, Any]]:
    """The replies to one Bayeux request of A's ([] when it failed)."""
    headers = {**arena.bearer(), "Content-Type": "application/json"}
    response = await answer(
        arena, http, what, method="POST", url=bayeux_http.PATH, json=list(messages), headers=headers
    )
    replies = response.json() if response is not None and response.status_code == 200 else []
    return replies if isinstance(replies, list) else []


async def session(arena: Arena, http: httpx.AsyncClient) -> str | None:
    """A new Bayeux session of A's, connected once (its clientId; None if refused)."""
    replies = await bayeux(arena, http, "handshake", bayeux_http.handshake())
    client_id = replies[0].get("clientId") if replies else None
    if not isinstance(client_id, str):
        return None
    await bayeux(arena, http, "connect", bayeux_http.connect(client_id, timeout_ms=0))
    return client_id


async def add_clients(arena: Arena, count: int, scopes: list[str]) -> None:
    """`count` more clients of A's, made by A itself (a tenant admin of its tenant), with their
    tokens added to `arena.attacker_tokens`. Two at a time: a node hashes only as many secrets
    at once as it has cores, and refuses more (503)."""
    gate = asyncio.Semaphore(2)
    path = f"/v1/admin/tenants/{arena.attacker.tenant}/clients"

    async def one(http: httpx.AsyncClient) -> str:
        async with gate:
            issued = await http.post(path, json={"scopes": scopes}, headers=arena.bearer())
            assert issued.status_code == 201, issued.text
            form = {
                "grant_type": "client_credentials",
                "client_id": issued.json()["clientId"],
                "client_secret": issued.json()["clientSecret"],
            }
            return await token_for(http, form)

    async with client(arena) as http:
        arena.attacker_tokens.extend(await asyncio.gather(*(one(http) for _ in range(count))))


async def token_for(http: httpx.AsyncClient, form: dict[str, str]) -> str:
    """The access token a token request with `form` is granted, asking again after a 503 (the
    node hashing as many secrets as it may) once `Retry-After` has passed."""
    granted = await http.post("/v1/oauth/token", data=form)
    while granted.status_code == 503:
        await asyncio.sleep(float(granted.headers["Retry-After"]))  # as the node asks
        granted = await http.post("/v1/oauth/token", data=form)
    assert granted.status_code == 200, granted.text
    return str(granted.json()["access_token"])
