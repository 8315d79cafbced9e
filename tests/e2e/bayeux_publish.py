"""REST publishing and expected Salesforce texts shared by the real-CometD-client tests."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import httpx

from tests.e2e.sse import publish

__all__ = [
    "API_VERSION",
    "bogus_replay_id",
    "invalid_replay_id_error",
    "keep_newest",
    "publish_batches",
    "publish_each",
    "tampered",
]

API_VERSION = "58.0"


async def publish_each(
    client: httpx.AsyncClient, base_url: str, token: str, channel: str, count: int, tag: str
) -> list[dict[str, Any]]:
    """`count` events, one request each (a JSON object body), in order; their acks."""
    acks: list[dict[str, Any]] = []
    for number in range(count):
        acks.append(await publish(client, base_url, token, channel, {"tag": tag, "n": number}))
    return acks


async def publish_batches(
    client: httpx.AsyncClient,
    base_url: str,
    token: str,
    channel: str,
    count: int,
    *,
    batch_size: int,
    publishers: int,
) -> list[dict[str, Any]]:
    """`count` events as JSON-array batches from `publishers` concurrent tasks; every ack,
    ordered by ReplayId (the order subscribers must see)."""
    payloads = [{"n": number} for number in range(count)]
    batches = [payloads[i : i + batch_size] for i in range(0, count, batch_size)]

    async def publisher(own: Sequence[list[dict[str, int]]]) -> list[dict[str, Any]]:
        acks: list[dict[str, Any]] = []
        for batch in own:
            result = await publish(client, base_url, token, channel, batch)
            assert isinstance(result, list), result
            assert len(result) == len(batch), result
            acks.extend(result)
        return acks

    results = await asyncio.gather(*(publisher(batches[k::publishers]) for k in range(publishers)))
    acks = [ack for result in results for ack in result]
    acks.sort(key=lambda ack: int(ack["replayId"]))
    assert len({ack["replayId"] for ack in acks}) == count
    return acks


async def keep_newest(
    client: httpx.AsyncClient, base_url: str, token: str, channel: str, count: int
) -> None:
    """Define `channel` of the token's tenant (the bootstrap tenant, `default`) to keep only
    its newest `count` events."""
    response = await client.put(
        f"{base_url}/v1/admin/tenants/default/channels{channel}",
        json={"retention": {"maxCount": count}},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text


def bogus_replay_id(latest: int) -> int:
    """A well-formed ReplayId (below 2^53) that the channel never assigned: past its top."""
    return latest + 10**12


def invalid_replay_id_error(replay_id: int) -> str:
    """Salesforce's text byte for byte (two spaces after "invalid.")."""
    return (
        f"400::The replayId {{{replay_id}}} you provided was invalid.  Please provide a valid "
        "ID, -2 to replay all events, or -1 to replay only new events."
    )


def tampered(token: str) -> str:
    """The token with its signature changed: well-formed, but it does not verify."""
    head, _, signature = token.rpartition(".")
    replacement = "AAAA" if not signature.startswith("AAAA") else "BBBB"
    return f"{head}.{replacement}{signature[4:]}"
