"""The addresses a request says it was forwarded for, as `/metrics` reads them."""

from __future__ import annotations

import pytest
from starlette.datastructures import Headers

from api.forwarded import forwarded_hosts, peer_host


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
