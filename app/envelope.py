"""The native event envelope (DESIGN §2): encoded once per event, shared by every subscriber."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson

from app.model import Event, Published, Window

__all__ = ["encode_envelope", "format_created", "published_json", "window_json"]


@lru_cache(maxsize=4)
def _second(epoch_second: int) -> str:
    return datetime.fromtimestamp(epoch_second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.")


def format_created(created_us: int) -> str:
    """UTC ISO-8601 with millisecond precision and a `Z`, as Salesforce's `CreatedDate`. Events
    come in bursts within a second, so the second's text is formatted once."""
    second, micro = divmod(created_us, 1_000_000)
    return f"{_second(second)}{micro // 1000:03d}Z"


def encode_envelope(event: Event) -> bytes:
    """`{"channel","replayId","uuid","createdDate","schema","payload"}`; the stored payload bytes
    are spliced in as they are, never decoded again."""
    return orjson.dumps(
        {
            "channel": event.key.name,
            "replayId": event.replay_id,
            "uuid": event.uuid,
            "createdDate": format_created(event.created_us),
            "schema": event.schema,
            "payload": orjson.Fragment(event.payload),
        }
    )


def published_json(channel: str, published: Published) -> dict[str, Any]:
    return {
        "channel": channel,
        "replayId": published.replay_id,
        "uuid": published.uuid,
        "createdDate": format_created(published.created_us),
        "duplicate": published.duplicate,
    }


def window_json(window: Window) -> dict[str, Any]:
    return {
        "earliest": window.earliest,
        "latest": window.latest,
        "lowWaterMark": window.low_water,
        "count": window.count,
    }
