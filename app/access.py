"""Who is calling, and what they may do.

A scope is `publish`, `subscribe` or `admin`; `publish` and `subscribe` may be narrowed to a
channel glob, `publish:/event/Order*`, where `*` matches within one segment and `**` across
segments. A wildcard subscription (`/event/*`) needs a scope covering every channel it could
deliver: the same pattern, or a glob ending in `/**` above it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from app.errors import InsufficientScope, InvalidBody

__all__ = ["SCOPES", "Principal", "parse_scope", "scope_allows"]

SCOPES = ("publish", "subscribe", "admin")
_NARROWABLE = ("publish", "subscribe")
_GLOB = re.compile(r"(/([A-Za-z0-9_.~-]|\*)+)+")


def parse_scope(text: str) -> str:
    """`text` if it is a valid scope, else InvalidBody explaining the form."""
    action, separator, glob = text.partition(":")
    if action not in SCOPES:
        raise InvalidBody(f"unknown scope {text!r}: scopes are {', '.join(SCOPES)}")
    if separator and action not in _NARROWABLE:
        raise InvalidBody(f"scope {text!r}: only publish and subscribe take a channel pattern")
    if separator and (not _GLOB.fullmatch(glob) or "***" in glob):
        raise InvalidBody(
            f"scope {text!r}: the pattern must be a channel name where * matches within a "
            "segment and ** across segments, such as publish:/event/Order*"
        )
    return text


@lru_cache(maxsize=4096)
def _glob(glob: str) -> re.Pattern[str]:
    parts = re.split(r"(\*\*|\*)", glob)
    table = {"**": ".*", "*": "[^/]*"}
    return re.compile("".join(table.get(part, re.escape(part)) for part in parts))


def _covers(glob: str, channel: str) -> bool:
    if not channel.endswith("*"):
        return _glob(glob).fullmatch(channel) is not None
    if glob == channel:
        return True
    return glob.endswith("/**") and channel.startswith(glob[:-2])


def scope_allows(scopes: frozenset[str], action: str, channel: str | None) -> bool:
    """Whether `scopes` allow `action` on `channel` (a name or a pattern ending in `*`/`**`);
    with no channel, whether they allow `action` on some channel."""
    if action in scopes:
        return True
    prefix = action + ":"
    narrowed = [scope[len(prefix) :] for scope in scopes if scope.startswith(prefix)]
    if channel is None:
        return bool(narrowed)
    return any(_covers(glob, channel) for glob in narrowed)


@dataclass(frozen=True, slots=True)
class Principal:
    """The verified identity behind an access token. The tenant comes only from the token."""

    tenant: str
    client_id: str
    scopes: frozenset[str]
    expires_at: float
    user: str | None = None
    client_generation: str = ""  # `ClientRecord.generation` when the token was issued

    @property
    def subject(self) -> str:
        """Who acts: the user for user grants, else the client itself."""
        return self.user or self.client_id

    @property
    def identity(self) -> str:
        """What a Bayeux session belongs to: the user for user grants (through any of the
        tenant's clients, as a Salesforce session belongs to its user), else the client."""
        return f"user:{self.user}" if self.user else f"client:{self.client_id}"

    def allows(self, action: str, channel: str | None = None) -> bool:
        return scope_allows(self.scopes, action, channel)

    def require(self, action: str, channel: str | None = None) -> None:
        if not self.allows(action, channel):
            where = f" on {channel}" if channel is not None else ""
            raise InsufficientScope(f"this token lacks the '{action}' scope{where}")
