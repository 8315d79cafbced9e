"""Channel names and patterns (Bayeux grammar, DESIGN §2).

A name is `/segment/segment...`, each segment of `[A-Za-z0-9_.~-]`. A pattern may end in `*`
(exactly one more segment) or `**` (one or more more segments). `/meta/**` belongs to the
protocol and `/service/**` is request/response; clients publish to `/event/**`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from app.errors import ChannelNotPublishable, InvalidChannel, UnknownChannel

__all__ = [
    "MAX_CHANNEL_LENGTH",
    "ChannelPattern",
    "is_meta",
    "is_service",
    "parse_name",
    "parse_pattern",
    "publishable_name",
    "subscribable_pattern",
]

MAX_CHANNEL_LENGTH = 255
_SEGMENT = re.compile(r"[A-Za-z0-9_.~-]+")
_NAME = re.compile(r"(?:/[A-Za-z0-9_.~-]+)+")
_PUBLISHABLE_ROOTS = ("event",)


def _segments(text: str) -> list[str]:
    if not text.startswith("/"):
        raise InvalidChannel(f"channel {text!r} must start with '/'")
    if len(text) > MAX_CHANNEL_LENGTH:
        raise InvalidChannel(f"channel names are at most {MAX_CHANNEL_LENGTH} characters")
    segments = text[1:].split("/")
    if any(segment == "" for segment in segments):
        raise InvalidChannel(f"channel {text!r} has an empty segment")
    return segments


def parse_name(text: str) -> str:
    """Return `text` if it is a concrete channel name (no wildcards), else raise InvalidChannel."""
    if len(text) <= MAX_CHANNEL_LENGTH and _NAME.fullmatch(text):
        return text  # one match for the common case; the checks below name what is wrong
    for segment in _segments(text):
        if not _SEGMENT.fullmatch(segment):
            if segment in ("*", "**"):
                raise InvalidChannel(f"channel {text!r} is a wildcard pattern, not a channel")
            raise InvalidChannel(
                f"channel {text!r}: segment {segment!r} may only contain letters, digits and _.~-"
            )
    return text


def publishable_name(text: str) -> str:
    """Return `text` if clients may publish to it; raise InvalidChannel or ChannelNotPublishable."""
    name = parse_name(text)
    root = name.split("/", 2)[1]
    if root not in _PUBLISHABLE_ROOTS or name.count("/") < 2:
        raise ChannelNotPublishable(
            f"channel {name!r} is not publishable: events are published to /event/<Name>"
        )
    return name


def is_meta(name: str) -> bool:
    return name == "/meta" or name.startswith("/meta/")


def is_service(name: str) -> bool:
    return name == "/service" or name.startswith("/service/")


@dataclass(frozen=True, slots=True)
class ChannelPattern:
    """A channel name or trailing-wildcard pattern. `prefix` holds the fixed segments."""

    text: str
    prefix: tuple[str, ...]
    wildcard: str | None  # None, "*" or "**"

    @property
    def is_wildcard(self) -> bool:
        return self.wildcard is not None

    def matches(self, name: str) -> bool:
        """Whether the concrete channel `name` is selected by this pattern."""
        if self.wildcard is None:
            return name == self.text
        segments = name[1:].split("/")
        fixed = len(self.prefix)
        if len(segments) <= fixed or tuple(segments[:fixed]) != self.prefix:
            return False
        return self.wildcard == "**" or len(segments) == fixed + 1


def parse_pattern(text: str) -> ChannelPattern:
    """Parse a channel name or a pattern ending in `/*` or `/**` (wildcards nowhere else)."""
    segments = _segments(text)
    *head, last = segments
    wildcard = last if last in ("*", "**") else None
    fixed = head if wildcard else segments
    for segment in fixed:
        if not _SEGMENT.fullmatch(segment):
            raise InvalidChannel(
                f"channel {text!r}: segment {segment!r} may only contain letters, digits and _.~-"
                + (" (wildcards only as the last segment)" if "*" in segment else "")
            )
    return ChannelPattern(text=text, prefix=tuple(fixed), wildcard=wildcard)


def subscribable_pattern(text: str) -> ChannelPattern:
    """A channel or pattern that can carry events: under `/event/`. Anything else is refused
    with UnknownChannel, since nothing could ever arrive on it."""
    pattern = parse_pattern(text)
    if (
        not pattern.prefix
        or pattern.prefix[0] not in _PUBLISHABLE_ROOTS
        or (len(pattern.prefix) == 1 and pattern.wildcard is None)
    ):
        raise UnknownChannel(
            f"channel {text!r} does not exist: events flow on /event/<Name> "
            "(and the patterns /event/* and /event/**)"
        )
    return pattern
