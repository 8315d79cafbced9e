"""Raw Bayeux messages, for tests that speak the protocol over plain HTTP (no CometD client):
post a list of them to `PATH` as JSON, with a Bearer token."""

from __future__ import annotations

from typing import Any

__all__ = ["PATH", "connect", "handshake", "subscribe"]

#: The Bayeux endpoint of the Salesforce API version the tests speak.
PATH = "/cometd/58.0"


def handshake() -> dict[str, Any]:
    return {
        "channel": "/meta/handshake",
        "version": "1.0",
        "supportedConnectionTypes": ["long-polling"],
    }


def connect(client_id: str, *, timeout_ms: float | None = None) -> dict[str, Any]:
    """A long-polling connect; `timeout_ms=0` asks for an answer at once instead of a held
    connect (it then reads whatever is there)."""
    message: dict[str, Any] = {
        "channel": "/meta/connect",
        "clientId": client_id,
        "connectionType": "long-polling",
    }
    if timeout_ms is not None:
        message["advice"] = {"timeout": timeout_ms}
    return message


def subscribe(client_id: str, subscription: str, *, replay: int | None = None) -> dict[str, Any]:
    """A subscription, from ReplayId `replay` (the replay extension) when given."""
    message: dict[str, Any] = {
        "channel": "/meta/subscribe",
        "clientId": client_id,
        "subscription": subscription,
    }
    if replay is not None:
        message["ext"] = {"replay": {subscription: replay}}
    return message
