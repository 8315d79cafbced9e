"""What the client raises."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

__all__ = ["Gap", "GapError", "ReplaybusClientError", "RequestFailed"]


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

    @classmethod
    def of(cls, response: httpx.Response) -> RequestFailed:
        """The failure a refused response states (its JSON `error` and `message`, or its
        text)."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            return cls(
                response.status_code,
                str(body.get("error", "error")),
                str(body.get("message", body.get("error_description", ""))),
                body,
            )
        return cls(response.status_code, "error", response.text[:500], {})


@dataclass(frozen=True, slots=True)
class Gap:
    """Events the subscriber asked for can no longer be delivered. The same value reports a
    gap on every transport (SSE `event: gap`, the history `gap` object, a Bayeux
    `ext.replaybus.gaps` entry or a refused replay position), always before the events that
    follow it.

    `requested`: the position that could not be resumed (None on a wildcard stream, which has
    none). `earliest`: the oldest ReplayId retained when the gap was found (None if nothing
    is), where delivery goes on; `latest`: the channel's newest ReplayId. `channel`: the
    channel that lost events, when one is known; `channels`: on a wildcard stream, the pattern
    of the channels that may have lost events. `reason`: the server's explanation, if any.
    """

    requested: int | None
    earliest: int | None
    latest: int | None
    channel: str | None = None
    channels: str | None = None
    reason: str | None = None


class GapError(ReplaybusClientError):
    """Raised by a subscriber without an `on_gap` callback when events were lost."""

    def __init__(self, gap: Gap) -> None:
        if gap.requested is None:
            text = f"events on {gap.channels or gap.channel} may have been missed: {gap.reason}"
        else:
            text = (
                f"events of {gap.channel} after replayId {gap.requested} are no longer "
                f"retained (the window starts at {gap.earliest})"
            )
        super().__init__(text)
        self.gap = gap
