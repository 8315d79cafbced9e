"""What the client raises."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GapError", "ReplaybusClientError", "RequestFailed"]


class ReplaybusClientError(Exception):
    """Base of every error this package raises."""


class RequestFailed(ReplaybusClientError):
    """The server refused a request for good (or retries ran out). `code` is the server's
    `error` (e.g. `schema_violation`), `details` the whole JSON body when there is one."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, object]) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


@dataclass(frozen=True, slots=True)
class Gap:
    """Events the subscriber asked for are gone from the retention window: `requested` could
    not be resumed; delivery goes on from `earliest`. Wildcard streams report a gap with no
    ids after a reconnect (they are live-only)."""

    requested: int | None
    earliest: int | None
    latest: int | None


class GapError(ReplaybusClientError):
    """Raised by a subscriber without an `on_gap` callback when events were lost."""

    def __init__(self, gap: Gap) -> None:
        super().__init__(
            f"events after replayId {gap.requested} are no longer retained "
            f"(the window starts at {gap.earliest})"
        )
        self.gap = gap
