"""What tenant A (or anyone on the network) does to a shared node, one function each. An attack
runs until it is cancelled and then lets go of everything it holds. It records in
`arena.findings` any answer A should never get (a 5xx other than 503, B's metrics)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson

from tests.hostile.arena import Arena, Attack

__all__ = ["ATTACKS"]

_LIMITS = httpx.Limits(max_connections=200, max_keepalive_connections=200)


@asynccontextmanager
async def _client(arena: Arena) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=arena.base_url, timeout=httpx.Timeout(60.0), limits=_LIMITS
    ) as http:
        yield http


async def _workers(count: int, work: Callable[[int], Awaitable[None]]) -> None:
    """`count` copies of `work(index)`, each repeated until cancelled."""

    async def forever(index: int) -> None:
        while True:
            await work(index)

    await asyncio.gather(*(forever(index) for index in range(count)))


async def _request(arena: Arena, http: httpx.AsyncClient, what: str, **kwargs: Any) -> int:
    """One request of A's: its status, or 0 when the connection failed."""
    try:
        response = await http.request(**kwargs)
    except httpx.TransportError:
        return 0
    arena.check(what, response.status_code, response.content)
    return response.status_code


@asynccontextmanager
async def _connection(
    arena: Arena, head: bytes
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A raw connection of A's that has sent `head`; aborted on leaving."""
    reader, writer = await asyncio.open_connection(*arena.address)
    try:
        writer.write(head)
        yield reader, writer
    finally:
        writer.transport.abort()


async def _status(arena: Arena, reader: asyncio.StreamReader, what: str) -> int:
    """The status of the response starting on `reader` (0 if the connection ended first)."""
    try:
        line = await reader.readline()
    except OSError:
        return 0
    parts = line.split()
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    arena.check(what, status)
    return status


async def _hold_many(arena: Arena, heads: Iterable[bytes], opening: int = 50) -> None:
    """Open a connection per head (`opening` at a time), read each response's status, and hold
    them all open until cancelled."""
    async with contextlib.AsyncExitStack() as held:
        gate = asyncio.Semaphore(opening)

        async def one(head: bytes) -> None:
            async with gate:
                try:
                    reader, _ = await held.enter_async_context(_connection(arena, head))
                except OSError:
                    return
                await _status(arena, reader, head.split(b" ", 2)[1].decode())

        await asyncio.gather(*(one(head) for head in heads))
        await asyncio.Event().wait()


def _get(path: str, token: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: replaybus\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    )


async def _bayeux(
    arena: Arena, http: httpx.AsyncClient, what: str, *messages: dict[str, Any]
) -> list[dict[str, Any]]:
    """The replies to one Bayeux request of A's ([] when it failed)."""
    headers = {**arena.bearer(), "Content-Type": "application/json"}
    try:
        response = await http.post("/cometd/58.0", json=list(messages), headers=headers)
    except httpx.TransportError:
        return []
    arena.check(what, response.status_code, response.content)
    replies = response.json() if response.status_code == 200 else []
    return replies if isinstance(replies, list) else []


async def _session(arena: Arena, http: httpx.AsyncClient) -> str | None:
    """A new Bayeux session of A's, connected once (its clientId; None if refused)."""
    handshake = {"channel": "/meta/handshake", "supportedConnectionTypes": ["long-polling"]}
    replies = await _bayeux(arena, http, "handshake", handshake)
    client_id = replies[0].get("clientId") if replies else None
    if not isinstance(client_id, str):
        return None
    await _bayeux(arena, http, "connect", _connect(client_id))
    return client_id


def _connect(client_id: str) -> dict[str, Any]:
    """A connect answered at once (not held), so it reads whatever is there every time."""
    return {
        "channel": "/meta/connect",
        "clientId": client_id,
        "connectionType": "long-polling",
        "advice": {"timeout": 0},
    }


# -- the attacks -------------------------------------------------------------------------------


async def publish_flood(arena: Arena) -> None:
    """As many publishes as A's connections can push: batches of small events to a few channels."""
    batch = [{"n": n, "pad": "x" * 64} for n in range(100)]
    async with _client(arena) as http:

        async def publish(index: int) -> None:
            await _request(
                arena,
                http,
                "publish",
                method="POST",
                url=f"/v1/events/event/Flood{index % 4}__e",
                json=batch if index % 2 else batch[0],
                headers=arena.bearer(),
            )

        await _workers(24, publish)


async def stream_flood(arena: Arena) -> None:
    """Thousands of SSE streams of A's, opened fast and held open."""
    heads = (_get(f"/v1/stream/event/Many{n % 100}__e", arena.attacker_token) for n in range(3000))
    await _hold_many(arena, heads)


def _bayeux_garbage() -> Iterator[tuple[bytes, str]]:
    small = {"channel": "/meta/subscribe", "clientId": "x" * 27, "subscription": "/event/X"}
    many = orjson.dumps([small] * ((32 * 1024 - 64) // (len(orjson.dumps(small)) + 1)))
    handshakes = orjson.dumps(
        [{"channel": "/meta/handshake", "supportedConnectionTypes": ["long-polling"]}] * 400
    )
    nested = b'[{"channel":"/meta/connect","data":' + b"[" * 20_000 + b"]" * 20_000 + b"}]"
    return itertools.cycle(
        [
            (many, "application/json"),
            (handshakes, "application/json"),
            (nested, "application/json"),
            (b"[" + b'{"channel":"/meta/connect"},' * 40_000 + b"{}]", "application/json"),
            (b"message=" + b"%5B" * 10_000, "application/x-www-form-urlencoded"),
            (b"\xff\xfe" * 1000, "application/json"),
            (
                orjson.dumps({"channel": "/meta/handshake", "ext": {"x": "y" * 30_000}}),
                "text/plain",
            ),
        ]
    )


async def bayeux_garbage(arena: Arena) -> None:
    """Malformed, oversized and over-long Bayeux arrays, from several connections at once."""
    bodies = _bayeux_garbage()
    async with _client(arena) as http:

        async def post(index: int) -> None:
            body, content_type = next(bodies)
            headers = {**arena.bearer(), "Content-Type": content_type}
            await _request(
                arena,
                http,
                "bayeux",
                method="POST",
                url="/cometd/58.0",
                content=body,
                headers=headers,
            )

        await _workers(8, post)


async def token_abuse(arena: Arena) -> None:
    """The token endpoint, anonymously: unknown clients, A's client with wrong secrets, bad
    Basic credentials and assertions of unknown issuers, many at once."""
    client_id, _ = arena.attacker_client
    unsigned = base64.urlsafe_b64encode(orjson.dumps({"iss": "nobody", "sub": "x"})).decode()

    def form(index: int) -> dict[str, str]:
        kind = index % 4
        if kind == 0:  # a client nobody has
            return {"grant_type": "client_credentials", "client_id": uuid.uuid4().hex}
        if kind == 1:
            return {"grant_type": "client_credentials", "client_id": client_id}
        if kind == 2:
            return {"grant_type": "password", "client_id": client_id, "username": "u"}
        return {
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "assertion": f"e30.{unsigned.rstrip('=')}.c2ln",
        }

    async with _client(arena) as http:

        async def ask(index: int) -> None:
            sent = {**form(index), "client_secret": "wrong", "password": "wrong"}
            headers = (
                {"Authorization": "Basic " + base64.b64encode(b"who:what").decode()}
                if index % 7 == 0
                else {}
            )
            status = await _request(
                arena,
                http,
                "token",
                method="POST",
                url="/v1/oauth/token",
                data=sent,
                headers=headers,
            )
            if status == 200:
                arena.find(f"token: a bad credential got a token: {sent}")

        await _workers(48, ask)


async def _define(arena: Arena, http: httpx.AsyncClient, channel: str, schema: object) -> None:
    """A defines one of its own channels with `schema` (the node may refuse it: that is fine)."""
    await _request(
        arena,
        http,
        "define",
        method="PUT",
        url=f"/v1/admin/tenants/{arena.attacker}/channels{channel}",
        json={"schema": schema},
        headers=arena.bearer(),
    )


async def _publish_forever(
    arena: Arena, http: httpx.AsyncClient, channel: str, payload: object
) -> None:
    async def publish(index: int) -> None:
        await _request(
            arena,
            http,
            "publish",
            method="POST",
            url="/v1/events" + channel,
            json=payload,
            headers=arena.bearer(),
        )

    await _workers(2, publish)


async def schema_remote_ref(arena: Arena) -> None:
    """A schema whose `$ref` names a host that accepts connections and never answers."""
    accepted: list[asyncio.StreamWriter] = []

    async def tarpit(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # never answered; closed when the attack ends

    server = await asyncio.start_server(tarpit, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with _client(arena) as http:
            channel = "/event/Remote__e"
            await _define(arena, http, channel, {"$ref": f"http://127.0.0.1:{port}/schema.json"})
            await _publish_forever(arena, http, channel, {"n": 1})
    finally:
        server.close()
        for writer in accepted:
            writer.transport.abort()


async def schema_backtracking(arena: Arena) -> None:
    """`^(a+)+$` against `aaaa…!`: exponential for a backtracking regex engine."""
    async with _client(arena) as http:
        channel = "/event/Pattern__e"
        schema = {"type": "object", "properties": {"s": {"type": "string", "pattern": "^(a+)+$"}}}
        await _define(arena, http, channel, schema)
        await _publish_forever(arena, http, channel, {"s": "a" * 23 + "!"})


async def schema_unique_items(arena: Arena) -> None:
    """`uniqueItems` over a big array of objects (which do not sort: pairwise comparison), in a
    payload that fails the schema elsewhere, so every keyword is evaluated."""
    async with _client(arena) as http:
        channel = "/event/Unique__e"
        schema = {
            "type": "object",
            "additionalProperties": False,
            "properties": {"items": {"type": "array", "uniqueItems": True}},
        }
        await _define(arena, http, channel, schema)
        await _publish_forever(
            arena, http, channel, {"items": [{"k": n} for n in range(800)], "x": 1}
        )


async def history_reads(arena: Arena) -> None:
    """A fills a channel with large events, then reads all of it over and over: history pages,
    SSE catch-up from -2 and Bayeux connects replaying from -2."""
    channel = "/event/Large__e"
    event = {"blob": "x" * (1024 * 1024 - 64)}
    async with _client(arena) as http:
        for _ in range(8):
            await _request(
                arena,
                http,
                "fill",
                method="POST",
                url="/v1/events" + channel,
                json=[event] * 6,
                headers=arena.bearer(),
            )

        async def history(index: int) -> None:
            await _request(
                arena,
                http,
                "history",
                method="GET",
                url=f"/v1/events{channel}?after=-2&limit=1000",
                headers=arena.bearer(),
            )

        async def catch_up(index: int) -> None:
            head = _get(f"/v1/stream{channel}?replayId=-2", arena.attacker_token)
            async with _connection(arena, head) as (reader, _):
                if await _status(arena, reader, "catch-up") == 200:
                    received = 0
                    while received < 40 * 1024 * 1024 and (chunk := await reader.read(1 << 20)):
                        received += len(chunk)

        async def replay(index: int) -> None:
            client_id = await _session(arena, http)
            if client_id is None:
                return
            subscribe = {
                "channel": "/meta/subscribe",
                "clientId": client_id,
                "subscription": channel,
                "ext": {"replay": {channel: -2}},
            }
            await _bayeux(arena, http, "subscribe", subscribe)
            for _ in range(20):
                await _bayeux(arena, http, "replay", _connect(client_id))

        await asyncio.gather(_workers(4, history), _workers(2, catch_up), _workers(2, replay))


async def wildcard_subscriptions(arena: Arena) -> None:
    """Wildcards over many channels: Bayeux sessions subscribed to `/event/**` connecting as
    fast as they can (each connect looks at every channel of A's), SSE streams each on its own
    wildcard prefix, and publishes spread over hundreds of channels."""
    channels = [f"/event/W{n}__e" for n in range(300)]
    async with _client(arena) as http:
        for channel in channels:
            await _request(
                arena,
                http,
                "fill",
                method="POST",
                url="/v1/events" + channel,
                json={},
                headers=arena.bearer(),
            )

        async def session(index: int) -> None:
            client_id = await _session(arena, http)
            if client_id is None:
                return
            subscribe = {
                "channel": "/meta/subscribe",
                "clientId": client_id,
                "subscription": "/event/**",
            }
            await _bayeux(arena, http, "subscribe", subscribe)
            while True:
                await _bayeux(arena, http, "connect", _connect(client_id))

        async def publish(index: int) -> None:
            await _request(
                arena,
                http,
                "publish",
                method="POST",
                url="/v1/events" + channels[(index * 7919 + len(channels)) % len(channels)],
                json={"n": index},
                headers=arena.bearer(),
            )

        streams = (_get(f"/v1/stream/event/P{n}/**", arena.attacker_token) for n in range(200))
        await asyncio.gather(
            _hold_many(arena, streams), _workers(20, session), _workers(2, publish)
        )


async def slow_senders(arena: Arena) -> None:
    """Connections that send their headers, or their body, a byte at a time and never finish."""
    token = arena.attacker_token

    async def dribble(head: bytes, byte: bytes) -> None:
        with contextlib.suppress(OSError):
            async with _connection(arena, head) as (_, writer):
                while True:
                    await asyncio.sleep(1.0)  # the attacker's pace
                    writer.write(byte)
                    await writer.drain()

    headers = b"GET /healthz HTTP/1.1\r\nHost: replaybus\r\nX-Slow: "
    body = (
        "POST /v1/events/event/Slow__e HTTP/1.1\r\nHost: replaybus\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        'Content-Length: 1000000\r\n\r\n{"pad": "'
    ).encode()
    await asyncio.gather(
        *(dribble(headers, b"a") for _ in range(1000)), *(dribble(body, b"x") for _ in range(200))
    )


async def metrics_forged(arena: Arena) -> None:
    """`/metrics` from outside the scrapers' network, claiming an address inside it through
    X-Forwarded-For (the ingress is trusted for forwarded headers, as the chart sets it)."""
    async with _client(arena) as http:

        async def scrape(index: int) -> None:
            forged = ("10.1.2.3", "10.0.0.1, 127.0.0.1")[index % 2]
            try:
                response = await http.get("/metrics", headers={"X-Forwarded-For": forged})
            except httpx.TransportError:
                return
            arena.check("metrics", response.status_code, response.content)
            if response.status_code == 200:
                leaked = arena.neighbour in response.text
                arena.find(
                    f"metrics served to a forged X-Forwarded-For {forged!r}"
                    + (f", naming tenant {arena.neighbour}" if leaked else "")
                )

        await _workers(2, scrape)


#: Every attack, by name (the tests' ids and the measurement's rows).
ATTACKS: dict[str, Attack] = {
    attack.__name__: attack
    for attack in (
        publish_flood,
        stream_flood,
        bayeux_garbage,
        token_abuse,
        schema_remote_ref,
        schema_backtracking,
        schema_unique_items,
        history_reads,
        wildcard_subscriptions,
        slow_senders,
        metrics_forged,
    )
}
