"""The addresses a request says it was forwarded for, as `/metrics` reads them, and the client
and scheme the app sees behind trusted proxies: only what a trusted proxy wrote counts."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.datastructures import Headers
from starlette.types import Message, Receive, Scope, Send

from api.forwarded import ForwardedMiddleware, forwarded_hosts, from_this_host, peer_host


@pytest.mark.parametrize(
    ("headers", "hosts"),
    [
        ([], []),
        ([("x-forwarded-for", "203.0.113.7")], ["203.0.113.7"]),
        ([("x-forwarded-for", "10.0.0.1, 203.0.113.7:4711")], ["10.0.0.1", "203.0.113.7"]),
        (
            [("x-forwarded-for", "10.0.0.1"), ("x-forwarded-for", "[2001:db8::1]:80")],
            ["10.0.0.1", "2001:db8::1"],
        ),
        ([("x-forwarded-for", "2001:db8::2")], ["2001:db8::2"]),
        ([("x-forwarded-for", " , ")], []),
        (
            [
                (
                    "forwarded",
                    'for=192.0.2.60;proto=http;by=203.0.113.43, for="[2001:db8:cafe::17]:4711"',
                )
            ],
            ["192.0.2.60", "2001:db8:cafe::17"],
        ),
        ([("forwarded", "For=_hidden")], ["_hidden"]),
        ([("x-real-ip", "198.51.100.9")], ["198.51.100.9"]),
        ([("x-forwarded-for", "unknown")], ["unknown"]),
    ],
)
def test_every_forwarded_address_is_listed_without_its_port(
    headers: list[tuple[str, str]], hosts: list[str]
) -> None:
    raw = [(name.encode(), value.encode()) for name, value in headers]
    assert forwarded_hosts(Headers(raw=raw)) == hosts


def test_the_peer_is_the_connection_before_any_rewrite() -> None:
    scope = {"type": "http", "client": ("203.0.113.7", 1), "replaybus.peer": ("10.0.0.1", 2)}
    assert peer_host(scope) == "10.0.0.1"
    assert peer_host({"type": "http", "client": ("127.0.0.1", 3)}) == "127.0.0.1"
    assert peer_host({"type": "http", "client": None}) == ""


async def _scope(trusted: str, peer: str, headers: list[tuple[str, str]]) -> dict[str, Any]:
    """The scope the app behind ForwardedMiddleware sees for one request."""
    seen: dict[str, Any] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.update(scope)

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        return None

    scope = {
        "type": "http",
        "scheme": "http",
        "client": (peer, 4711),
        "headers": [(name.encode(), value.encode()) for name, value in headers],
    }
    await ForwardedMiddleware(app, trusted)(scope, receive, send)
    assert peer_host(seen) == peer  # the peer itself is always kept
    return seen


async def _seen(trusted: str, peer: str, headers: list[tuple[str, str]]) -> tuple[str, str]:
    """(client host, scheme) the app behind ForwardedMiddleware sees for one request."""
    seen = await _scope(trusted, peer, headers)
    return seen["client"][0], seen["scheme"]


PROXY = "10.0.0.5"
CLIENT = "198.51.100.7"


@pytest.mark.parametrize(
    ("trusted", "peer", "headers", "seen"),
    [
        # Every peer trusted: only the entry the peer added names the client.
        ("*", PROXY, [("x-forwarded-for", CLIENT)], (CLIENT, "http")),
        ("*", PROXY, [("x-forwarded-for", f"127.0.0.1, {CLIENT}")], (CLIENT, "http")),
        (
            "*",
            PROXY,
            [("x-forwarded-for", "127.0.0.1"), ("x-forwarded-for", CLIENT)],
            (CLIENT, "http"),
        ),
        ("*", PROXY, [("x-forwarded-for", f"[2001:db8::1]:80, {CLIENT}:1234")], (CLIENT, "http")),
        # A list: the rightmost entry that is not a trusted proxy.
        (
            "10.0.0.0/8",
            PROXY,
            [("x-forwarded-for", f"127.0.0.1, {CLIENT}, 10.1.2.3")],
            (CLIENT, "http"),
        ),
        (
            "10.0.0.0/8, 192.0.2.1",
            PROXY,
            [("x-forwarded-for", f"{CLIENT}, 192.0.2.1")],
            (CLIENT, "http"),
        ),
        ("10.0.0.0/8", PROXY, [("x-forwarded-for", "10.9.9.9, 10.1.2.3")], ("10.9.9.9", "http")),
        ("10.0.0.5", PROXY, [("x-forwarded-for", CLIENT)], (CLIENT, "http")),
        # An untrusted peer's headers are ignored.
        (
            "10.0.0.0/8",
            CLIENT,
            [("x-forwarded-for", "10.1.2.3"), ("x-forwarded-proto", "https")],
            (CLIENT, "http"),
        ),
        ("127.0.0.1", CLIENT, [("x-forwarded-for", "127.0.0.1")], (CLIENT, "http")),
        # Nothing forwarded, or blanks: the peer.
        ("*", PROXY, [], (PROXY, "http")),
        ("*", PROXY, [("x-forwarded-for", " , ")], (PROXY, "http")),
        # The scheme: the last X-Forwarded-Proto entry, when it is one.
        ("*", PROXY, [("x-forwarded-proto", "https")], (PROXY, "https")),
        ("*", PROXY, [("x-forwarded-proto", "https, http")], (PROXY, "http")),
        (
            "*",
            PROXY,
            [("x-forwarded-proto", "http"), ("x-forwarded-proto", "HTTPS")],
            (PROXY, "https"),
        ),
        ("*", PROXY, [("x-forwarded-proto", "gopher")], (PROXY, "http")),
    ],
)
async def test_the_client_and_scheme_are_what_a_trusted_proxy_wrote(
    trusted: str, peer: str, headers: list[tuple[str, str]], seen: tuple[str, str]
) -> None:
    assert await _seen(trusted, peer, headers) == seen


@pytest.mark.parametrize(
    ("trusted", "peer", "headers", "local"),
    [
        ("127.0.0.1", "127.0.0.1", [], True),
        ("127.0.0.1", "::1", [], True),
        ("*", CLIENT, [], False),
        # A forged loopback address from afar, whoever is trusted.
        ("*", CLIENT, [("x-forwarded-for", "127.0.0.1")], False),
        ("127.0.0.1", CLIENT, [("x-forwarded-for", "127.0.0.1")], False),
        # A trusted proxy on this host: its client decides.
        ("127.0.0.1", "127.0.0.1", [("x-forwarded-for", "127.0.0.1")], True),
        ("127.0.0.1", "127.0.0.1", [("x-forwarded-for", f"127.0.0.1, {CLIENT}")], False),
        ("*", "127.0.0.1", [("x-forwarded-for", f"127.0.0.1, {CLIENT}")], False),
        ("*", "127.0.0.1", [("x-forwarded-proto", "http")], True),
        # A proxy on this host that is not trusted relays callers from anywhere.
        ("10.0.0.0/8", "127.0.0.1", [("x-forwarded-for", "127.0.0.1")], False),
        ("10.0.0.0/8", "127.0.0.1", [("x-forwarded-proto", "http")], False),
        ("10.0.0.0/8", "127.0.0.1", [("forwarded", "for=127.0.0.1")], False),
        ("10.0.0.0/8", "127.0.0.1", [("x-real-ip", "127.0.0.1")], False),
        ("10.0.0.0/8", "127.0.0.1", [("x-forwarded-host", "example.com")], True),
    ],
)
async def test_a_request_is_from_this_host_only_by_its_peer_and_a_trusted_proxys_word(
    trusted: str, peer: str, headers: list[tuple[str, str]], local: bool
) -> None:
    assert from_this_host(await _scope(trusted, peer, headers)) is local
