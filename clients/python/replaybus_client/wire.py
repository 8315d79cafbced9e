"""What the server sends, decoded: events (SSE and history envelopes, Bayeux messages) and a
channel's window."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from replaybus_client.auth import TokenSource
from replaybus_client.errors import RequestFailed

__all__ = ["Event", "bayeux_event", "channel_top", "channel_window", "envelope_event"]


@dataclass(frozen=True, slots=True)
class Event:
    channel: str
    replay_id: int
    uuid: str | None
    created_date: str | None
    schema: str | None
    payload: dict[str, Any]


async def channel_window(
    http: httpx.AsyncClient, base_url: str, channel: str, tokens: TokenSource
) -> dict[str, Any]:
    """The channel's window: `earliest`, `latest`, `lowWaterMark`, `count`."""
    token = await tokens.token(http)
    response = await http.get(
        f"{base_url.rstrip('/')}/v1/channels{channel}", headers={"Authorization": f"Bearer {token}"}
    )
    if response.status_code != 200:
        raise RequestFailed.of(response)
    window: dict[str, Any] = response.json()
    return window


async def channel_top(
    http: httpx.AsyncClient, base_url: str, channel: str, tokens: TokenSource
) -> int:
    """The channel's newest ReplayId, from its window."""
    return int((await channel_window(http, base_url, channel, tokens))["latest"])


def envelope_event(document: dict[str, Any]) -> Event:
    """An event from its envelope (SSE `data:`, a history page)."""
    return Event(
        channel=str(document["channel"]),
        replay_id=int(document["replayId"]),
        uuid=document.get("uuid"),
        created_date=document.get("createdDate"),
        schema=document.get("schema"),
        payload=document["payload"],
    )


def bayeux_event(channel: str, data: dict[str, Any]) -> Event:
    meta = data.get("event") or {}
    payload = dict(data.get("payload") or {})
    return Event(
        channel=channel,
        replay_id=int(meta["replayId"]),
        uuid=meta.get("EventUuid"),
        created_date=payload.get("CreatedDate"),
        schema=data.get("schema"),
        payload=payload,
    )
