"""Watching an HTTP connection from inside a long-lived response."""

from __future__ import annotations

from starlette.types import Receive

__all__ = ["until_disconnected"]


async def until_disconnected(receive: Receive) -> None:
    """Return once the client has gone away (ASGI `http.disconnect`)."""
    while (await receive())["type"] != "http.disconnect":
        pass
