"""The resume rule (DESIGN §2) as a pure function with an honest answer."""

from __future__ import annotations

import re
from dataclasses import dataclass

from app.errors import InvalidReplayId
from app.model import Window

__all__ = [
    "ALL_RETAINED",
    "MAX_REPLAY_ID",
    "NEW_ONLY",
    "Gap",
    "Recovered",
    "parse_position",
    "recover",
]

NEW_ONLY = -1
ALL_RETAINED = -2
MAX_REPLAY_ID = 2**53 - 1
_INTEGER = re.compile(r"-?[0-9]{1,20}")


@dataclass(frozen=True, slots=True)
class Recovered:
    """Resumable: deliver exactly the events with replayId > `after`, then live ones."""

    after: int


@dataclass(frozen=True, slots=True)
class Gap:
    """Not resumable: events after `requested` were evicted (or `requested` was never assigned).

    `earliest` is the oldest retained ReplayId (None if nothing is retained) and `latest` the top.
    `resume_after` is where a subscriber continuing "from the earliest retained" should start.
    """

    requested: int
    earliest: int | None
    latest: int
    resume_after: int


def recover(requested: int, window: Window) -> Recovered | Gap:
    """Decide where a subscriber asking for events after `requested` starts.

    -1 starts at the top (new events only); -2 at the low-water mark (every retained event).
    N in [low_water, latest] resumes exactly; anything else is a Gap, resuming at the low-water
    mark.
    """
    if requested == NEW_ONLY:
        return Recovered(after=window.latest)
    if requested == ALL_RETAINED:
        return Recovered(after=window.low_water)
    if window.low_water <= requested <= window.latest:
        return Recovered(after=requested)
    return Gap(
        requested=requested,
        earliest=window.earliest,
        latest=window.latest,
        resume_after=window.low_water,
    )


def parse_position(text: str) -> int:
    """Parse a client-supplied position: -1, -2 or a ReplayId in [0, 2^53)."""
    stripped = text.strip()
    if not _INTEGER.fullmatch(stripped):
        raise InvalidReplayId(
            f"replayId {text!r} is not an integer: use -1 (new events), -2 (all retained) or an id"
        )
    value = int(stripped)
    if value in (NEW_ONLY, ALL_RETAINED) or 0 <= value <= MAX_REPLAY_ID:
        return value
    raise InvalidReplayId(
        f"replayId {value} is out of range: use -1 (new events), -2 (all retained) "
        f"or an id between 0 and {MAX_REPLAY_ID}"
    )
