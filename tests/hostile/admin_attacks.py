"""What tenant A does to a shared node as its tenant's admin (schemas, retention, composite
requests), and what the operator's own changes (deleting and re-creating tenants) must not do
to B: one function each, listed in `ATTACKS`."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

import httpx

from tests.harness import bayeux_http
from tests.hostile.arena import Arena, Attack, operator
from tests.hostile.moves import (
    answer,
    client,
    connection,
    get,
    request,
    status,
    token_for,
    workers,
)

__all__ = ["ATTACKS"]


async def _define(arena: Arena, http: httpx.AsyncClient, channel: str, body: object) -> int:
    """A defines one of its own channels (the node may refuse it: that is fine)."""
    return await request(
        arena,
        http,
        "define",
        method="PUT",
        url=f"/v1/admin/tenants/{arena.attacker.tenant}/channels{channel}",
        json=body,
        headers=arena.bearer(),
    )


async def _publish(arena: Arena, http: httpx.AsyncClient, channel: str, payload: object) -> int:
    return await request(
        arena,
        http,
        "publish",
        method="POST",
        url="/v1/events" + channel,
        json=payload,
        headers=arena.bearer(),
    )


async def _publish_forever(
    arena: Arena, http: httpx.AsyncClient, channel: str, payload: object
) -> None:
    async def publish(http: httpx.AsyncClient, index: int) -> None:
        await _publish(arena, http, channel, payload)

    await workers(arena, 2, publish)


# -- schemas -----------------------------------------------------------------------------------


async def schema_remote_ref(arena: Arena) -> None:
    """A schema whose `$ref` names a host that accepts connections and never answers."""
    accepted: list[asyncio.StreamWriter] = []

    async def tarpit(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # never answered; closed when the attack ends

    server = await asyncio.start_server(tarpit, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with client(arena) as http:
            channel = "/event/Remote__e"
            schema = {"$ref": f"http://127.0.0.1:{port}/schema.json"}
            await _define(arena, http, channel, {"schema": schema})
            await _publish_forever(arena, http, channel, {"n": 1})
    finally:
        server.close()
        for writer in accepted:
            writer.transport.abort()


async def schema_backtracking(arena: Arena) -> None:
    """`^(a+)+$` against `aaaa…!`: exponential for a backtracking regex engine."""
    async with client(arena) as http:
        channel = "/event/Pattern__e"
        schema = {"type": "object", "properties": {"s": {"type": "string", "pattern": "^(a+)+$"}}}
        await _define(arena, http, channel, {"schema": schema})
        await _publish_forever(arena, http, channel, {"s": "a" * 23 + "!"})


async def schema_unique_items(arena: Arena) -> None:
    """`uniqueItems` over a big array of objects (which do not sort: pairwise comparison), in a
    payload that fails the schema elsewhere, so every keyword is evaluated."""
    async with client(arena) as http:
        channel = "/event/Unique__e"
        schema = {
            "type": "object",
            "additionalProperties": False,
            "properties": {"items": {"type": "array", "uniqueItems": True}},
        }
        await _define(arena, http, channel, {"schema": schema})
        await _publish_forever(
            arena, http, channel, {"items": [{"k": n} for n in range(800)], "x": 1}
        )


_LARGE_SCHEMAS = 12


def _schema(variant: int, properties: int, description: int) -> dict[str, Any]:
    """A distinct object schema of `properties` string properties, each described at length."""
    return {
        "type": "object",
        "properties": {
            f"p{n}": {"type": "string", "maxLength": 64 + variant, "description": "d" * description}
            for n in range(properties)
        },
    }


async def _define_large_schemas(arena: Arena) -> None:
    """Channels whose schemas are close to the largest allowed, with as many subschemas as the
    node compiles: a few of them fill a worker's validator cache."""
    async with client(arena) as http:
        for n in range(_LARGE_SCHEMAS):
            schema = _schema(n, 400, 100)
            defined = await _define(arena, http, f"/event/Large{n}__e", {"schema": schema})
            assert defined == 200, defined


async def schema_cache(arena: Arena) -> None:
    """Validator cache pressure: publishes going round the large-schema channels (more than the
    cache holds, so each may need its validators built again) and round every other channel
    A defines meanwhile, a new one with a new schema after another."""
    channels = [f"/event/Large{n}__e" for n in range(_LARGE_SCHEMAS)]
    count = itertools.count()

    async def define(http: httpx.AsyncClient, index: int) -> None:
        n = next(count)
        channel = f"/event/Defined{n}__e"
        if await _define(arena, http, channel, {"schema": _schema(n, 40, 20)}) == 200:
            channels.append(channel)

    async def publish(http: httpx.AsyncClient, index: int) -> None:
        await _publish(arena, http, channels[next(count) % len(channels)], {"p0": "x"})

    await asyncio.gather(workers(arena, 2, define), workers(arena, 6, publish))


# -- retention ---------------------------------------------------------------------------------

_DEEP_CHANNELS = 2
_DEEP_EVENTS = 50_000
_BATCH = 1000


async def _fill(arena: Arena, http: httpx.AsyncClient, channel: str, events: int) -> None:
    batch = [{"n": n} for n in range(_BATCH)]
    for _ in range(events // _BATCH):
        await _publish(arena, http, channel, batch)


async def _fill_deep_channels(arena: Arena) -> None:
    async with client(arena) as http:
        await asyncio.gather(
            *(_fill(arena, http, f"/event/Deep{n}__e", _DEEP_EVENTS) for n in range(_DEEP_CHANNELS))
        )


async def retention_shrink(arena: Arena) -> None:
    """A shrinks the retention of its channels holding tens of thousands of events to one event
    through channel definitions, and publishes into them (trimming what is now beyond the
    window); meanwhile it fills another channel and shrinks it again, over and over, and asks
    for retentions above the operator's maxima."""

    async def shrink(http: httpx.AsyncClient, channel: str) -> None:
        await _define(arena, http, channel, {"retention": {"maxCount": 1}})
        await _publish(arena, http, channel, {"n": "after"})

    async def cycle(http: httpx.AsyncClient, index: int) -> None:
        channel = f"/event/Cycle{index}__e"
        await _define(arena, http, channel, {"retention": {"maxCount": 100_000}})
        await _fill(arena, http, channel, 10_000)
        await shrink(http, channel)

    attempts = itertools.count()

    async def beyond(http: httpx.AsyncClient, index: int) -> None:
        attempt = next(attempts)
        retention = ({"maxCount": 100_001}, {"maxAge": 366 * 86400})[attempt % 2]
        channel = f"/event/Deep{attempt % _DEEP_CHANNELS}__e"
        code = await request(
            arena,
            http,
            "beyond the maxima",
            method="PUT",
            url=f"/v1/admin/tenants/{arena.attacker.tenant}/channels{channel}",
            json={"retention": retention},
            headers=arena.bearer(),
        )
        if code == 200:
            arena.find(f"a channel definition exceeded the operator's maxima: {retention}")

    async with client(arena) as http:
        for n in range(_DEEP_CHANNELS):
            await shrink(http, f"/event/Deep{n}__e")
    await asyncio.gather(workers(arena, 2, cycle), workers(arena, 1, beyond))


# -- composite requests ------------------------------------------------------------------------

_QUOTA_CHANNELS = 8  # A's maxChannels, all of them in use once prepared
_WATCHED = 6  # of those, the channels the refused requests name


async def _at_channel_quota(arena: Arena) -> None:
    """A at its tenant's channel quota, with one event in each of its channels."""
    async with client(arena) as http:
        settings = {"settings": {"maxChannels": _QUOTA_CHANNELS}}
        updated = await operator(
            http, "PATCH", f"/v1/admin/tenants/{arena.attacker.tenant}", settings
        )
        assert updated.status_code == 200, updated.text
        for n in range(_QUOTA_CHANNELS):
            assert await _publish(arena, http, f"/event/Aon{n}__e", {"n": 0}) == 201


def _refused_batch(index: int) -> list[dict[str, Any]]:
    """200 records for A's watched channels and one that must sink them all, somewhere in the
    batch: a record of a new channel beyond the quota, one without a type, or one too large."""
    records: list[dict[str, Any]] = [
        {"attributes": {"type": f"Aon{n % _WATCHED}__e"}, "n": n} for n in range(199)
    ]
    spoiler: dict[str, Any] = (
        {"attributes": {"type": f"Beyond{index}__e"}, "n": -1},
        {"n": -1},
        {"attributes": {"type": "Aon0__e"}, "blob": "x" * (1024 * 1024)},
    )[index % 3]
    records.insert((index * 37) % 200, spoiler)
    return records


async def composite_all_or_none(arena: Arena) -> None:
    """Salesforce composite requests with `allOrNone` whose records span several event types,
    one of them bound to fail: nothing of such a request may be stored, whichever record
    fails and wherever it is. A watches its channels' latest ReplayId to see."""
    url = "/services/data/v58.0/composite/sobjects"
    latest: dict[str, int] = {}
    async with client(arena) as http:
        for n in range(_WATCHED):
            window = await http.get(f"/v1/channels/event/Aon{n}__e", headers=arena.bearer())
            latest[f"Aon{n}__e"] = window.json()["latest"]
    sent = itertools.count()
    watched = itertools.cycle(latest)

    async def send(http: httpx.AsyncClient, index: int) -> None:
        body = {"allOrNone": True, "records": _refused_batch(next(sent))}
        response = await answer(
            arena, http, "composite", method="POST", url=url, json=body, headers=arena.bearer()
        )
        if response is None or response.status_code != 200:
            return
        stored = [r for r in response.json() if isinstance(r, dict) and r.get("success")]
        if stored:
            arena.find(f"allOrNone: {len(stored)} records stored of a refused request")

    async def watch(http: httpx.AsyncClient, index: int) -> None:
        name = next(watched)
        window = await answer(
            arena,
            http,
            "window",
            method="GET",
            url=f"/v1/channels/event/{name}",
            headers=arena.bearer(),
        )
        if window is None or window.status_code != 200:
            return
        if window.json()["latest"] != latest[name]:
            arena.find(f"allOrNone: a refused request stored events in {name}")

    await asyncio.gather(workers(arena, 4, send), workers(arena, 1, watch))


# -- the operator's changes --------------------------------------------------------------------

#: Short catalog bounds, held connects and store timeouts, so a deleted tenant's id may be used
#: again after a few seconds (`app.admin.tenant_id_reuse_delay`: 0.5 + 0.5 + 0.25 + 1 +
#: max(0.5, 0.5 + 1) = 3.75 s, answered as `Retry-After: 4`) and the churn re-creates tenants
#: during the attack, which lasts long enough for that.
_CHURN_SETTINGS = {
    "REPLAYBUS_CATALOG_CACHE_TTL": "250ms",
    "REPLAYBUS_CATALOG_MAX_STALE": "1s",
    "REPLAYBUS_DATABASE_POOL_TIMEOUT": "500ms",
    "REPLAYBUS_DATABASE_COMMAND_TIMEOUT": "500ms",
    "REPLAYBUS_REDIS_POOL_TIMEOUT": "500ms",
    "REPLAYBUS_REDIS_COMMAND_TIMEOUT": "1s",
    "REPLAYBUS_BAYEUX_TIMEOUT": "500ms",
}
_CHURN_S = 9.0


async def tenant_churn(arena: Arena) -> None:
    """The operator deletes tenants in use and creates them again under the same ids, while B
    runs: each tenant gets a client, a token, events on several channels, a Bayeux session and
    an open SSE stream, then is deleted; its id is refused (409) until it may be used again,
    and a tenant created again under it must find none of the old one's events."""

    async def churn(http: httpx.AsyncClient, index: int) -> None:
        tenant = f"C{index}{arena.attacker.tenant}"
        what = "create"
        while True:
            created = await operator(http, "POST", "/v1/admin/tenants", {"tenantId": tenant})
            arena.check(what, created.status_code, created.content)
            if created.status_code == 409:
                await asyncio.sleep(float(created.headers["Retry-After"]))  # as it asks
                continue
            if created.status_code == 201:
                await _use_and_delete(arena, http, tenant)
            what = "recreate"

    await workers(arena, 3, churn)


async def _use_and_delete(arena: Arena, http: httpx.AsyncClient, tenant: str) -> None:
    async with contextlib.AsyncExitStack() as held:  # closed after the deletion
        try:
            await _use(arena, http, tenant, held)
        finally:
            deleted = await operator(http, "DELETE", f"/v1/admin/tenants/{tenant}")
            arena.check("delete", deleted.status_code, deleted.content)


async def _use(
    arena: Arena, http: httpx.AsyncClient, tenant: str, held: contextlib.AsyncExitStack
) -> None:
    """A client of `tenant` with a token, events on several channels, an SSE stream of them
    held open in `held`, and a Bayeux session."""
    issued = await operator(
        http, "POST", f"/v1/admin/tenants/{tenant}/clients", {"scopes": ["publish", "subscribe"]}
    )
    arena.check("client", issued.status_code, issued.content)
    if issued.status_code != 201:
        return
    form = {
        "grant_type": "client_credentials",
        "client_id": issued.json()["clientId"],
        "client_secret": issued.json()["clientSecret"],
    }
    token = await token_for(http, form)
    bearer = {"Authorization": f"Bearer {token}"}
    history = await http.get("/v1/events/event/Churn0__e?after=-2", headers=bearer)
    if history.status_code == 200 and history.json()["events"]:
        arena.find(f"tenant {tenant} created again sees the deleted one's events")
    for n in range(3):
        published = await http.post(
            f"/v1/events/event/Churn{n}__e", json=[{"n": k} for k in range(100)], headers=bearer
        )
        arena.check("publish", published.status_code, published.content)
    head = get("/v1/stream/event/Churn0__e?replayId=-2", token)
    reader, _ = await held.enter_async_context(connection(arena, head))
    await status(arena, reader, "stream")
    handshake = await http.post(bayeux_http.PATH, json=[bayeux_http.handshake()], headers=bearer)
    arena.check("handshake", handshake.status_code, handshake.content)


#: The attacks of this module.
ATTACKS = (
    Attack(schema_remote_ref, proof=frozenset({("define", 400)})),
    Attack(schema_backtracking, proof=frozenset({("publish", 400)})),
    Attack(schema_unique_items, proof=frozenset({("publish", 400)})),
    Attack(schema_cache, prepare=_define_large_schemas, proof=frozenset({("publish", 201)})),
    Attack(
        retention_shrink,
        prepare=_fill_deep_channels,
        proof=frozenset({("define", 200), ("beyond the maxima", 400)}),
    ),
    Attack(composite_all_or_none, prepare=_at_channel_quota, proof=frozenset({("composite", 200)})),
    Attack(
        tenant_churn,
        settings=_CHURN_SETTINGS,
        proof=frozenset({("delete", 200), ("recreate", 409), ("recreate", 201)}),
        lasts=_CHURN_S,
    ),
)
