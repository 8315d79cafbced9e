"""A request's addresses: the TCP peer, and the client a trusted proxy says it forwards for."""

from __future__ import annotations

from typing import Any, cast

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

__all__ = ["ForwardedMiddleware", "forwarded_hosts", "peer_host"]

#: The scope key holding the connection's own peer `(host, port)`, before any rewrite.
_PEER = "replaybus.peer"


class ForwardedMiddleware:
    """When the peer is one of the `trusted` proxies (comma list or `*`), takes `client` and
    `scheme` from `X-Forwarded-For` / `-Proto` (uvicorn's rules), keeping the peer itself in the
    scope: a check that must trust no header (`/metrics`) judges `peer_host` instead."""

    def __init__(self, app: ASGIApp, trusted: str) -> None:
        self._app = ProxyHeadersMiddleware(cast(Any, app), trusted_hosts=trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[_PEER] = scope.get("client")
        await self._app(cast(Any, scope), cast(Any, receive), cast(Any, send))


def peer_host(scope: Scope) -> str:
    """The address of the connection's other end ("" when unknown, e.g. a Unix socket)."""
    peer = scope.get(_PEER, scope.get("client"))
    return str(peer[0]) if peer else ""


def forwarded_hosts(headers: Headers) -> list[str]:
    """Every address the request says it was forwarded for: each `X-Forwarded-For` entry, each
    `for=` of `Forwarded`, and `X-Real-IP`, without ports or brackets. Obfuscated or unknown
    entries come back as they are (they are no address)."""
    hosts = [
        entry.strip()
        for value in headers.getlist("x-forwarded-for")
        for entry in value.split(",")
        if entry.strip()
    ]
    for value in headers.getlist("forwarded"):
        for element in value.split(","):
            for pair in element.split(";"):
                name, _, text = pair.strip().partition("=")
                if name.lower() == "for":
                    hosts.append(text.strip().strip('"'))
    hosts.extend(value.strip() for value in headers.getlist("x-real-ip"))
    return [_without_port(host) for host in hosts]


def _without_port(host: str) -> str:
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        return host.partition(":")[0]
    return host
