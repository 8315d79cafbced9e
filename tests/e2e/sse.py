"""A small SSE reading helper over httpx-sse, the client library the tests use as EventSource."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import EventSource, ServerSentEvent


@dataclass(frozen=True)
class Received:
    event: str
    id: str | None
    data: dict[str, Any]


def channel_name() -> str:
    """A fresh channel per test, so tests sharing a server never see each other's events."""
    return f"/event/T{uuid.uuid4().hex[:12]}__e"


async def publish(
    client: httpx.AsyncClient, base_url: str, token: str, channel: str, payload: object
) -> Any:
    response = await client.post(
        f"{base_url}/v1/events{channel}",
        json=payload,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 201, response.text
    return response.json()


async def dispatched(source: EventSource) -> AsyncIterator[ServerSentEvent]:
    """Events as a browser's EventSource dispatches them: blocks with no data (such as the
    `retry:` hint) are not dispatched (WHATWG HTML, "dispatch the event", step 1)."""
    async for message in source.aiter_sse():
        if message.data != "":
            yield message
