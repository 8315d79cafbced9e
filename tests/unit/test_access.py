"""Scopes: their grammar, channel globs (`*` within a segment, `**` across), and which
wildcard subscriptions a narrowed scope covers."""

from __future__ import annotations

import pytest

from app.access import Principal, parse_scope, scope_allows
from app.errors import InsufficientScope, InvalidBody


def principal(*scopes: str) -> Principal:
    return Principal("acme", "acme-app", frozenset(scopes), expires_at=2e9)


# --- parse_scope ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scope",
    [
        "publish",
        "subscribe",
        "admin",
        "publish:/event/Order*",
        "subscribe:/event/**",
        "subscribe:/event/A/*",
        "publish:/event/Order_Placed__e",
        "subscribe:/data/Account.Change-Event~1",
    ],
)
def test_parse_scope_accepts(scope: str) -> None:
    assert parse_scope(scope) == scope


@pytest.mark.parametrize(
    "scope",
    [
        "read",
        "",
        "Publish",
        "admin:/event/x",
        "admin:",
        "publish:",
        "publish:event/x",
        "publish:/event/***",
        "publish:/event/a b",
        "publish:/event/x/",
        "publish:/event//x",
        "subscribe:/event/x:y",
    ],
)
def test_parse_scope_rejects(scope: str) -> None:
    with pytest.raises(InvalidBody):
        parse_scope(scope)


def test_parse_scope_names_the_scope_in_its_error() -> None:
    with pytest.raises(InvalidBody, match="read") as raised:
        parse_scope("read")
    assert "publish" in raised.value.message  # and lists the valid ones


# --- plain channels ------------------------------------------------------------------------------

#: (scopes, action, channel, allowed)
CASES: list[tuple[tuple[str, ...], str, str | None, bool]] = [
    # A plain scope allows its action on every channel, and with no channel named.
    (("publish",), "publish", "/event/Order_Placed__e", True),
    (("publish",), "publish", "/event/Anything/at/all", True),
    (("subscribe",), "subscribe", "/event/**", True),
    (("publish",), "publish", None, True),
    (("admin",), "admin", None, True),
    # One segment: `*` stays within it.
    (("publish:/event/Order*",), "publish", "/event/Order_Placed__e", True),
    (("publish:/event/Order*",), "publish", "/event/Order", True),
    (("publish:/event/Order*",), "publish", "/event/Invoice__e", False),
    (("publish:/event/Order*",), "publish", "/event/Order/x", False),
    (("publish:/event/Order*",), "publish", "/event/XOrder", False),
    (("publish:/event/Order*",), "publish", "/data/Order", False),
    (("publish:/event/*",), "publish", "/event/A/B", False),
    (("publish:/event/*/x",), "publish", "/event/A/x", True),
    # Across segments: `**`.
    (("publish:/event/**",), "publish", "/event/A", True),
    (("publish:/event/**",), "publish", "/event/A/B/C", True),
    (("publish:/event/**",), "publish", "/eventful/A", False),
    (("publish:/**",), "publish", "/data/AccountChangeEvent", True),
    # Literal characters are literal: `.` is not a regex wildcard.
    (("publish:/event/A.b",), "publish", "/event/A.b", True),
    (("publish:/event/A.b",), "publish", "/event/AXb", False),
    # An exact channel.
    (("publish:/event/Order__e",), "publish", "/event/Order__e", True),
    (("publish:/event/Order__e",), "publish", "/event/Order__eX", False),
    # Several narrowed scopes: any of them.
    (("publish:/event/A*", "publish:/event/B*"), "publish", "/event/Bee", True),
    (("publish:/event/A*", "publish:/event/B*"), "publish", "/event/Cee", False),
    # No channel: "some channel", which a narrowed scope is enough for.
    (("publish:/event/Order*",), "publish", None, True),
    (("subscribe:/event/A/*",), "subscribe", None, True),
    (("subscribe",), "publish", None, False),
    ((), "publish", None, False),
    ((), "publish", "/event/A", False),
    # One action never grants another.
    (("publish",), "subscribe", "/event/A", False),
    (("publish",), "subscribe", None, False),
    (("publish:/event/**",), "subscribe", "/event/A", False),
    (("publish:/event/**",), "subscribe", None, False),
    (("publish:/event/**",), "subscribe", "/event/**", False),
    (("subscribe",), "publish", "/event/A", False),
    (("subscribe:/event/**",), "publish", "/event/A", False),
    (("publish", "subscribe"), "admin", None, False),
]


@pytest.mark.parametrize(("scopes", "action", "channel", "allowed"), CASES)
def test_scope_allows(
    scopes: tuple[str, ...], action: str, channel: str | None, allowed: bool
) -> None:
    assert scope_allows(frozenset(scopes), action, channel) is allowed


@pytest.mark.parametrize(("scopes", "action", "channel", "allowed"), CASES)
def test_principal_allows_and_require_agree_with_scope_allows(
    scopes: tuple[str, ...], action: str, channel: str | None, allowed: bool
) -> None:
    who = principal(*scopes)
    assert who.allows(action, channel) is allowed
    if allowed:
        who.require(action, channel)
    else:
        with pytest.raises(InsufficientScope):
            who.require(action, channel)


def test_principal_allows_defaults_to_some_channel() -> None:
    assert principal("publish:/event/Order*").allows("publish")
    assert not principal("publish:/event/Order*").allows("subscribe")
    principal("publish:/event/Order*").require("publish")


def test_insufficient_scope_names_the_action_and_the_channel() -> None:
    with pytest.raises(InsufficientScope) as raised:
        principal("publish:/event/Order*").require("publish", "/event/Invoice__e")
    assert "publish" in raised.value.message
    assert "/event/Invoice__e" in raised.value.message


def test_insufficient_scope_without_a_channel_names_the_action() -> None:
    with pytest.raises(InsufficientScope) as raised:
        principal("publish").require("subscribe")
    assert "subscribe" in raised.value.message
    assert " on " not in raised.value.message


# --- wildcard subscriptions ----------------------------------------------------------------------

#: (subscribe scope glob, wildcard channel, covered)
WILDCARDS: list[tuple[str, str, bool]] = [
    ("/event/**", "/event/*", True),
    ("/event/**", "/event/**", True),
    ("/event/**", "/event/A/*", True),
    ("/event/**", "/event/A/**", True),
    ("/**", "/event/*", True),
    ("/event/*", "/event/*", True),
    ("/event/*", "/event/**", False),
    ("/event/*", "/event/A/*", False),
    ("/event/A/*", "/event/A/*", True),
    ("/event/A/*", "/event/*", False),
    ("/event/A/**", "/event/*", False),
    ("/event/A/**", "/event/**", False),
    ("/event/Order*", "/event/*", False),
    ("/event/Order*", "/event/**", False),
    ("/event/**", "/data/*", False),
    ("/event/**", "/eventful/*", False),
]


@pytest.mark.parametrize(("glob", "channel", "covered"), WILDCARDS)
def test_a_wildcard_subscription_needs_a_scope_covering_every_channel_it_delivers(
    glob: str, channel: str, covered: bool
) -> None:
    assert scope_allows(frozenset({f"subscribe:{glob}"}), "subscribe", channel) is covered
    assert principal(f"subscribe:{glob}").allows("subscribe", channel) is covered


@pytest.mark.parametrize("channel", ["/event/*", "/event/**", "/event/A/*"])
def test_a_plain_subscribe_scope_covers_every_wildcard(channel: str) -> None:
    assert principal("subscribe").allows("subscribe", channel)


@pytest.mark.parametrize("channel", ["/event/*", "/event/**"])
def test_a_publish_scope_never_covers_a_wildcard_subscription(channel: str) -> None:
    assert not principal("publish", "publish:/event/**").allows("subscribe", channel)
