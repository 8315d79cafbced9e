"""A request's addresses: the TCP peer, and the client a trusted proxy says it forwards for."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["ForwardedMiddleware", "forwarded_hosts", "from_this_host", "peer_host"]

#: The scope key holding the connection's own peer `(host, port)`, before any rewrite.
_PEER = "replaybus.peer"
#: The scope key saying the peer is a trusted proxy (its forwarded headers were applied).
_TRUSTED_PEER = "replaybus.trusted_peer"
_SCHEMES = frozenset({"http", "https"})
#: Headers by which a request says it was relayed for someone else.
_FORWARDING_HEADERS = ("x-forwarded-for", "x-forwarded-proto", "forwarded", "x-real-ip")
#: The headers a trusted proxy's word is taken from (ASGI header names are lower case).
_REWRITING_HEADERS = frozenset({b"x-forwarded-for", b"x-forwarded-proto"})
#: Peers whose trust is remembered (the least recently seen are forgotten first).
_MAX_REMEMBERED_PEERS = 1024


class _Trusted:
    """The proxies trusted for forwarded headers: `*` (every peer), or a comma list of
    addresses and networks (anything else, such as a Unix socket's name, is matched as text)."""

    def __init__(self, trusted: str) -> None:
        entries = [entry.strip() for entry in trusted.split(",") if entry.strip()]
        self.everyone = "*" in entries
        self._networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self._names: set[str] = set()
        for entry in entries:
            try:
                self._networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self._names.add(entry)
        # Parsing an address costs more than the rest of the middleware, so the answer for
        # each TCP peer is kept: bounded in count, and peers are what the server reports (never
        # a header's text, which `in` judges afresh every time).
        self.trusts_peer: Callable[[str], bool] = functools.lru_cache(_MAX_REMEMBERED_PEERS)(
            self.__contains__
        )

    def __contains__(self, host: str) -> bool:
        if self.everyone:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return host in self._names
        return any(address in network for network in self._networks)


class ForwardedMiddleware:
    """When the TCP peer is one of the `trusted` proxies (comma list of addresses and CIDRs, or
    `*`), takes the request's `client` and `scheme` from `X-Forwarded-For` / `-Proto`, reading
    only what a trusted proxy wrote: each proxy appends the address it received the request
    from, so entries further left may be the client's own invention.

    - The client is the rightmost `X-Forwarded-For` entry that is not a trusted proxy (with
      `*`, every entry would be, so it is the last one: the address the peer itself saw); if
      every entry is a trusted proxy, the leftmost.
    - The scheme is the last `X-Forwarded-Proto` entry (what the peer says), when it is `http`
      or `https`.

    The peer itself stays in the scope: a check that must trust no header (`/metrics`) judges
    `peer_host` instead, and `from_this_host` both."""

    def __init__(self, app: ASGIApp, trusted: str) -> None:
        self._app = app
        self._trusted = _Trusted(trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            peer = scope.get("client")
            scope[_PEER] = peer
            if peer is not None and self._trusted.trusts_peer(peer[0]):
                scope[_TRUSTED_PEER] = True
                for name, _ in scope["headers"]:
                    if name in _REWRITING_HEADERS:
                        self._rewrite(scope)
                        break
        await self._app(scope, receive, send)

    def _rewrite(self, scope: Scope) -> None:
        headers = Headers(scope=scope)
        schemes = _entries(headers.getlist("x-forwarded-proto"))
        if schemes and schemes[-1].lower() in _SCHEMES:
            scope["scheme"] = schemes[-1].lower()
        hosts = [_without_port(entry) for entry in _entries(headers.getlist("x-forwarded-for"))]
        if not hosts:
            return
        if self._trusted.everyone:
            client = hosts[-1]
        else:
            untrusted = [host for host in hosts if host not in self._trusted]
            client = untrusted[-1] if untrusted else hosts[0]
        scope["client"] = (client, 0)


def _entries(values: list[str]) -> list[str]:
    """The comma-separated entries of a header sent once or more, in order, without blanks."""
    return [entry.strip() for value in values for entry in value.split(",") if entry.strip()]


def from_this_host(scope: Scope) -> bool:
    """Whether the request comes from a program on this host: the TCP peer on loopback, and,
    if the request says it was forwarded (any X-Forwarded-For/-Proto, Forwarded or X-Real-IP
    header), a trusted proxy that names a loopback client. A proxy on this host relays
    callers from anywhere, so its word counts only when it is trusted, and forwarded headers
    from anyone else are never taken for it."""
    if not _is_loopback(peer_host(scope)):
        return False
    if not any(name in Headers(scope=scope) for name in _FORWARDING_HEADERS):
        return True
    client = scope.get("client")
    return bool(scope.get(_TRUSTED_PEER)) and client is not None and _is_loopback(client[0])


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def peer_host(scope: Scope) -> str:
    """The address of the connection's other end ("" when unknown, e.g. a Unix socket)."""
    peer = scope.get(_PEER, scope.get("client"))
    return str(peer[0]) if peer else ""


def forwarded_hosts(headers: Headers) -> list[str]:
    """Every address the request says it was forwarded for: each `X-Forwarded-For` entry, each
    `for=` of `Forwarded`, and `X-Real-IP`, without ports or brackets. Obfuscated or unknown
    entries come back as they are (they are no address)."""
    hosts = _entries(headers.getlist("x-forwarded-for"))
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
