"""Channel names and patterns: the Bayeux grammar and what may be published or subscribed."""

from __future__ import annotations

import pytest

from app.channels import (
    MAX_CHANNEL_LENGTH,
    ChannelPattern,
    parse_name,
    parse_pattern,
    publishable_name,
    subscribable_pattern,
)
from app.errors import ChannelNotPublishable, InvalidChannel, UnknownChannel

_LONGEST = "/event/" + "a" * (MAX_CHANNEL_LENGTH - len("/event/"))


def test_longest_name_is_255_characters() -> None:
    assert MAX_CHANNEL_LENGTH == 255
    assert len(_LONGEST) == 255


@pytest.mark.parametrize(
    "name",
    [
        "/a",
        "/event/Order_Placed__e",
        "/event/a/b/c",
        "/x/A-z.0~9_",
        "/meta/handshake",
        "/service/echo",
        _LONGEST,
    ],
)
def test_valid_names_are_returned_unchanged(name: str) -> None:
    assert parse_name(name) == name


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("/", id="root-only"),
        pytest.param("event/X", id="no-leading-slash"),
        pytest.param("/event//X", id="empty-segment"),
        pytest.param("/event/X/", id="trailing-slash"),
        pytest.param("//event", id="leading-double-slash"),
        pytest.param("/event/Order Placed", id="space"),
        pytest.param("/event/Hi!", id="bang"),
        pytest.param("/event/café", id="unicode"),
        pytest.param("/event/a+b", id="plus"),
        pytest.param("/event/a%2Fb", id="percent"),
        pytest.param("/event/X\n", id="newline"),
        pytest.param(_LONGEST + "a", id="256-characters"),
        pytest.param("/event/*", id="one-segment-wildcard"),
        pytest.param("/event/**", id="any-depth-wildcard"),
        pytest.param("/event/a*", id="star-inside-segment"),
    ],
)
def test_invalid_names_are_refused(text: str) -> None:
    with pytest.raises(InvalidChannel):
        parse_name(text)


@pytest.mark.parametrize(
    ("text", "prefix", "wildcard"),
    [
        ("/event/X", ("event", "X"), None),
        ("/event/*", ("event",), "*"),
        ("/event/**", ("event",), "**"),
        ("/a/b/*", ("a", "b"), "*"),
        ("/**", (), "**"),
    ],
)
def test_pattern_splits_fixed_prefix_and_trailing_wildcard(
    text: str, prefix: tuple[str, ...], wildcard: str | None
) -> None:
    assert parse_pattern(text) == ChannelPattern(text=text, prefix=prefix, wildcard=wildcard)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("/a/*/b", id="star-not-last"),
        pytest.param("/a/**/b", id="double-star-not-last"),
        pytest.param("/a/b*", id="star-inside-last-segment"),
        pytest.param("/a/*b", id="star-prefixes-segment"),
        pytest.param("/a/***", id="triple-star"),
        pytest.param("/a/*/", id="trailing-slash"),
        pytest.param("a/*", id="no-leading-slash"),
        pytest.param("/a b/*", id="bad-character-before-wildcard"),
        pytest.param("/" + "a/" * 127 + "**", id="over-255-characters"),
    ],
)
def test_invalid_patterns_are_refused(text: str) -> None:
    with pytest.raises(InvalidChannel):
        parse_pattern(text)


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("/foo/*", "/foo/bar", True),
        ("/foo/*", "/foo", False),
        ("/foo/*", "/foo/bar/baz", False),
        ("/foo/*", "/foobar/baz", False),
        ("/foo/*", "/other/bar", False),
        ("/foo/**", "/foo/bar", True),
        ("/foo/**", "/foo/bar/baz", True),
        ("/foo/**", "/foo/bar/baz/qux", True),
        ("/foo/**", "/foo", False),
        ("/foo/**", "/foobar/baz", False),
        ("/foo/bar", "/foo/bar", True),
        ("/foo/bar", "/foo/bar/baz", False),
        ("/foo/bar", "/foo", False),
        ("/a/b/*", "/a/b/c", True),
        ("/a/b/*", "/a/c/d", False),
    ],
)
def test_pattern_matches(pattern: str, name: str, expected: bool) -> None:
    assert parse_pattern(pattern).matches(name) is expected


@pytest.mark.parametrize("name", ["/event/X", "/event/Order_Placed__e", "/event/a/b"])
def test_event_channels_are_publishable(name: str) -> None:
    assert publishable_name(name) == name


@pytest.mark.parametrize("name", ["/event", "/meta/x", "/service/x", "/topic/x", "/x"])
def test_channels_outside_event_namespace_are_not_publishable(name: str) -> None:
    with pytest.raises(ChannelNotPublishable):
        publishable_name(name)


@pytest.mark.parametrize("text", ["/event/*", "/event/**", "event/X", "/event/a b"])
def test_publishing_to_a_pattern_or_bad_name_is_an_invalid_channel(text: str) -> None:
    with pytest.raises(InvalidChannel):
        publishable_name(text)


@pytest.mark.parametrize(
    ("text", "wildcard"),
    [("/event/X", None), ("/event/a/b", None), ("/event/*", "*"), ("/event/**", "**")],
)
def test_event_channels_and_patterns_are_subscribable(text: str, wildcard: str | None) -> None:
    pattern = subscribable_pattern(text)

    assert pattern.text == text
    assert pattern.wildcard == wildcard


@pytest.mark.parametrize(
    "text", ["/meta/**", "/meta/connect", "/service/x", "/**", "/*", "/event", "/topic/X"]
)
def test_channels_no_event_can_reach_are_unknown(text: str) -> None:
    with pytest.raises(UnknownChannel):
        subscribable_pattern(text)


@pytest.mark.parametrize("text", ["/event/*/x", "/event/", "event/*"])
def test_subscribing_to_a_malformed_pattern_is_an_invalid_channel(text: str) -> None:
    with pytest.raises(InvalidChannel):
        subscribable_pattern(text)
