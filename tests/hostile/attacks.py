"""What tenant A (or anyone on the network) does to a shared node over the wire, one function
each, and `ATTACKS`, every attack by name (those of a tenant admin or the operator are in
`tests.hostile.admin_attacks`). An attack runs until it is cancelled and then lets go of
everything it holds. It records in `arena.findings` any answer A should never get (a 5xx other
than 503, B's metrics)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import uuid
from collections.abc import Iterator

import httpx
import orjson

from tests.harness import bayeux_http
from tests.hostile import admin_attacks
from tests.hostile.arena import BODY_TIMEOUT_S, HEADER_TIMEOUT_S, Arena, Attack
from tests.hostile.moves import (
    add_clients,
    bayeux,
    client,
    connection,
    discard,
    get,
    hold_many,
    raw,
    request,
    session,
    status,
    workers,
)

__all__ = ["ATTACKS"]


async def publish_flood(arena: Arena) -> None:
    """As many publishes as A's connections can push: batches of small events to a few channels."""
    batch = [{"n": n, "pad": "x" * 64} for n in range(100)]

    async def publish(http: httpx.AsyncClient, index: int) -> None:
        await request(
            arena,
            http,
            "publish",
            method="POST",
            url=f"/v1/events/event/Flood{index % 4}__e",
            json=batch if index % 2 else batch[0],
            headers=arena.bearer(),
        )

    await workers(arena, 24, publish)


_STREAM_CLIENTS = 40
#: The worker's stream cap on the stream flood's node: A's clients together reach it before
#: each reaches its own cap (100), except the first, which opens more than that at once.
_STREAMS_PER_WORKER = 2000


async def _stream_clients(arena: Arena) -> None:
    await add_clients(arena, _STREAM_CLIENTS, ["subscribe"])


async def stream_flood(arena: Arena) -> None:
    """Thousands of SSE streams of A's, from many clients, opened fast and held open: one client
    goes past its own cap, then all of them together past the worker's."""
    tokens = arena.attacker_tokens
    first = [tokens[0]] * 120
    spread = [tokens[n % len(tokens)] for n in range(_STREAMS_PER_WORKER + 400)]
    heads = (
        get(f"/v1/stream/event/Many{n % 100}__e", token)
        for n, token in enumerate(itertools.chain(first, spread))
    )
    await hold_many(arena, heads, "stream")


def _bayeux_garbage() -> Iterator[tuple[bytes, str]]:
    small = {"channel": "/meta/subscribe", "clientId": "x" * 27, "subscription": "/event/X"}
    many = orjson.dumps([small] * ((32 * 1024 - 64) // (len(orjson.dumps(small)) + 1)))
    handshakes = orjson.dumps([bayeux_http.handshake()] * 400)
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

    async def post(http: httpx.AsyncClient, index: int) -> None:
        body, content_type = next(bodies)
        headers = {**arena.bearer(), "Content-Type": content_type}
        await request(
            arena,
            http,
            "bayeux",
            method="POST",
            url=bayeux_http.PATH,
            content=body,
            headers=headers,
        )

    await workers(arena, 8, post)


_TOKEN_KINDS = (
    "unknown client",
    "wrong secret",
    "unknown user",
    "unknown issuer",
    "no grant",
    "bad basic",
)


def _token_answer(response: httpx.Response) -> str:
    """What a token refusal was: its OAuth error, or which limit a 429 is."""
    try:
        body = response.json()
    except ValueError:
        return "token: not JSON"
    if response.status_code == 429:
        limit = "address" if "address" in body.get("error_description", "") else "client"
        return f"token: {limit} limit"
    return f"token: {body.get('error')}"


async def _token_abuse(arena: Arena, forge: bool) -> None:
    client_id = arena.attacker.client_id
    unsigned = base64.urlsafe_b64encode(orjson.dumps({"iss": "nobody", "sub": "x"})).decode()
    addresses = (f"198.18.{n >> 8 & 255}.{n & 255}" for n in itertools.count())

    def form(kind: str) -> dict[str, str]:
        if kind == "unknown client":
            return {"grant_type": "client_credentials", "client_id": uuid.uuid4().hex}
        if kind == "wrong secret":
            return {"grant_type": "client_credentials", "client_id": client_id}
        if kind == "unknown user":
            return {"grant_type": "password", "client_id": client_id, "username": "u"}
        if kind == "no grant":  # refused at once, without a look at the client
            return {"grant_type": "authorization_code", "client_id": client_id}
        if kind == "bad basic":
            return {"grant_type": "client_credentials"}
        return {
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "assertion": f"e30.{unsigned.rstrip('=')}.c2ln",
        }

    async def ask(http: httpx.AsyncClient, index: int) -> None:
        kind = _TOKEN_KINDS[index % len(_TOKEN_KINDS)]
        sent = {**form(kind), "client_secret": "wrong", "password": "wrong"}
        headers = {}
        if kind == "bad basic":
            headers["Authorization"] = "Basic " + base64.b64encode(b"who:what").decode()
        if forge:  # a new address each time, over HTTPS as far as the node can tell
            headers["X-Forwarded-For"] = next(addresses)
            headers["X-Forwarded-Proto"] = "https"
        try:
            response = await http.post("/v1/oauth/token", data=sent, headers=headers)
        except httpx.TransportError:
            return
        arena.check(_token_answer(response), response.status_code, response.content)
        if response.status_code == 200:
            arena.find(f"token: a bad credential got a token: {sent}")
        if forge and _token_answer(response) == "token: address limit":
            arena.find("token: the forged addresses were limited as one: they were not believed")

    await workers(arena, 48, ask)


async def token_abuse(arena: Arena) -> None:
    """The token endpoint, anonymously, from A's one address: unknown clients, A's client with
    wrong secrets, bad Basic credentials, assertions of unknown issuers and grants the node does
    not offer, many at once."""
    await _token_abuse(arena, forge=False)


async def token_abuse_forged(arena: Arena) -> None:
    """`token_abuse` from a new address for every request: A forges X-Forwarded-For (and
    X-Forwarded-Proto), which a node trusting every peer as a proxy believes, so no address
    limit holds A back; the per-client limits, the bounded hashing and the timer-only refusal
    of unknown clients must."""
    await _token_abuse(arena, forge=True)


_LARGE_CHANNEL = "/event/Large__e"


async def _fill_large_channel(arena: Arena) -> None:
    """48 events of nearly 1 MiB in one channel of A's."""
    event = {"blob": "x" * (1024 * 1024 - 64)}
    async with client(arena) as http:
        for _ in range(8):
            filled = await request(
                arena,
                http,
                "fill",
                method="POST",
                url="/v1/events" + _LARGE_CHANNEL,
                json=[event] * 6,
                headers=arena.bearer(),
            )
            assert filled == 201, filled


async def history_reads(arena: Arena) -> None:
    """A reads a channel of large events whole, over and over: history pages, SSE catch-up
    from -2 and Bayeux connects replaying from -2."""
    channel = _LARGE_CHANNEL

    history_request = raw("GET", f"/v1/events{channel}?after=-2&limit=1000", arena.attacker.token)

    async def history(http: httpx.AsyncClient, index: int) -> None:
        await discard(arena, history_request, "history")

    async def catch_up(http: httpx.AsyncClient, index: int) -> None:
        head = get(f"/v1/stream{channel}?replayId=-2", arena.attacker.token)
        async with connection(arena, head) as (reader, _):
            if await status(arena, reader, "catch-up") == 200:
                received = 0
                while received < 40 * 1024 * 1024 and (chunk := await reader.read(1 << 20)):
                    received += len(chunk)

    async def replay(http: httpx.AsyncClient, index: int) -> None:
        client_id = await session(arena, http)
        if client_id is None:
            return
        subscribe = bayeux_http.subscribe(client_id, channel, replay=-2)
        await bayeux(arena, http, "subscribe", subscribe)
        connect = orjson.dumps([bayeux_http.connect(client_id, timeout_ms=0)])
        for _ in range(20):
            await discard(
                arena, raw("POST", bayeux_http.PATH, arena.attacker.token, connect), "replay"
            )

    await asyncio.gather(
        workers(arena, 4, history), workers(arena, 2, catch_up), workers(arena, 2, replay)
    )


_WILDCARD_CHANNELS = [f"/event/W{n}__e" for n in range(300)]


async def _fill_wildcard_channels(arena: Arena) -> None:
    async with client(arena) as http:
        for channel in _WILDCARD_CHANNELS:
            filled = await request(
                arena,
                http,
                "fill",
                method="POST",
                url="/v1/events" + channel,
                json={},
                headers=arena.bearer(),
            )
            assert filled == 201, filled


async def wildcard_subscriptions(arena: Arena) -> None:
    """Wildcards over many channels: Bayeux sessions subscribed to `/event/**` connecting as
    fast as they can (each connect looks at every channel of A's), SSE streams each on its own
    wildcard prefix, and publishes spread over hundreds of channels."""
    channels = _WILDCARD_CHANNELS
    published = itertools.count()

    async def one_session(http: httpx.AsyncClient, index: int) -> None:
        client_id = await session(arena, http)
        if client_id is None:
            return
        await bayeux(arena, http, "subscribe", bayeux_http.subscribe(client_id, "/event/**"))
        while True:
            await bayeux(arena, http, "connect", bayeux_http.connect(client_id, timeout_ms=0))

    async def publish(http: httpx.AsyncClient, index: int) -> None:
        n = next(published)
        await request(
            arena,
            http,
            "publish",
            method="POST",
            url="/v1/events" + channels[n * 7919 % len(channels)],
            json={"n": n},
            headers=arena.bearer(),
        )

    streams = (get(f"/v1/stream/event/P{n}/**", arena.attacker.token) for n in range(200))
    await asyncio.gather(
        hold_many(arena, streams, "stream"),
        workers(arena, 20, one_session),
        workers(arena, 2, publish),
    )


_DRIBBLE_S = 0.5  # the slow senders' pace: a byte this often


async def slow_senders(arena: Arena) -> None:
    """Connections that send their headers, or their body, a byte at a time and never finish,
    opened again as soon as the node closes them. The node must close each within its read
    deadline (headers: from the connection; body: from the headers, answering 408): one still
    open at twice its deadline is a finding."""

    async def until_closed(reader: asyncio.StreamReader, what: str) -> None:
        await status(arena, reader, what)  # 408 for a late body; nothing for late headers
        with contextlib.suppress(OSError):
            while await reader.read(65536):
                pass

    async def dribble(head: bytes, what: str, deadline: float) -> None:
        while True:
            with contextlib.suppress(OSError):  # the node closing while A writes
                async with connection(arena, head) as (reader, writer):
                    closed = asyncio.create_task(until_closed(reader, what))
                    try:
                        async with asyncio.timeout(2 * deadline):
                            while not closed.done():
                                writer.write(b"x")
                                await writer.drain()
                                await asyncio.wait({closed}, timeout=_DRIBBLE_S)
                    except TimeoutError:
                        arena.find(
                            f"a connection sending its {what} a byte at a time was still open "
                            f"{2 * deadline:g} s after it opened (deadline {deadline:g} s)"
                        )
                    finally:
                        closed.cancel()

    headers = b"GET /healthz HTTP/1.1\r\nHost: replaybus\r\nX-Slow: "
    body = (
        "POST /v1/events/event/Slow__e HTTP/1.1\r\nHost: replaybus\r\n"
        f"Authorization: Bearer {arena.attacker.token}\r\nContent-Type: application/json\r\n"
        'Content-Length: 1000000\r\n\r\n{"pad": "'
    ).encode()
    await asyncio.gather(
        *(dribble(headers, "headers", HEADER_TIMEOUT_S) for _ in range(500)),
        *(dribble(body, "body", BODY_TIMEOUT_S) for _ in range(200)),
    )


async def metrics_forged(arena: Arena) -> None:
    """`/metrics` from outside the scrapers' network, claiming an address inside it through
    X-Forwarded-For (the ingress is trusted for forwarded headers, as the chart sets it)."""

    async def scrape(http: httpx.AsyncClient, index: int) -> None:
        forged = ("10.1.2.3", "10.0.0.1, 127.0.0.1")[index % 2]
        try:
            response = await http.get("/metrics", headers={"X-Forwarded-For": forged})
        except httpx.TransportError:
            return
        arena.check("metrics", response.status_code, response.content)
        if response.status_code == 200:
            leaked = arena.neighbour.tenant in response.text
            arena.find(
                f"metrics served to a forged X-Forwarded-For {forged!r}"
                + (f", naming tenant {arena.neighbour.tenant}" if leaked else "")
            )

    await workers(arena, 2, scrape)


#: Every attack, by name (the tests' ids and the measurement's rows).
ATTACKS: dict[str, Attack] = {
    attack.name: attack
    for attack in (
        Attack(publish_flood, proof=frozenset({("publish", 201)})),
        Attack(
            stream_flood,
            prepare=_stream_clients,
            settings={"REPLAYBUS_SSE_MAX_STREAMS": str(_STREAMS_PER_WORKER)},
            proof=frozenset({("stream", 200), ("stream", 429), ("stream", 503)}),
            builds_up=True,
        ),
        Attack(bayeux_garbage, proof=frozenset({("bayeux", 413)})),
        Attack(token_abuse, proof=frozenset({("token: address limit", 429)})),
        # Refused for what they are, not for coming over plain HTTP from afar.
        Attack(
            token_abuse_forged,
            proof=frozenset({("token: invalid_client", 400), ("token: client limit", 429)}),
        ),
        *admin_attacks.ATTACKS,
        Attack(
            history_reads,
            prepare=_fill_large_channel,
            proof=frozenset({("history", 200), ("catch-up", 200), ("replay", 200)}),
        ),
        Attack(
            wildcard_subscriptions,
            prepare=_fill_wildcard_channels,
            proof=frozenset({("stream", 200), ("connect", 200), ("publish", 201)}),
        ),
        Attack(slow_senders, proof=frozenset({("body", 408)})),
        Attack(metrics_forged, proof=frozenset({("metrics", 403)})),
    )
}
