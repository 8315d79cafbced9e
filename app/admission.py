"""A node's limit on how much of one kind of expensive work it starts at once (replays from
history, Bayeux handshakes). It never queues: past the limit the caller is refused with a
jittered retry delay, so a reconnect storm is turned away in spread-out waves instead of
piling up until the node falls over."""

from __future__ import annotations

import random
from collections.abc import Callable

from app.errors import Overloaded

__all__ = ["Admission", "Place", "jittered"]


def jittered(base: float, spread: float) -> float:
    """`base` plus a uniformly random share of `spread` seconds."""
    return base + random.uniform(0.0, spread)


class Admission:
    def __init__(
        self, kind: str, limit: int, spread: float, on_refused: Callable[[], None] | None = None
    ) -> None:
        self.kind = kind
        self.limit = limit
        self.spread = spread
        self.active = 0
        self._on_refused = on_refused

    def enter(self) -> Place:
        """Take a place, or raise Overloaded (with a jittered `retry_after` of at least 1 s)."""
        if self.active >= self.limit:
            if self._on_refused is not None:
                self._on_refused()
            raise Overloaded(
                f"this node is serving its maximum of {self.limit} concurrent {self.kind}: "
                "retry shortly",
                retry_after=jittered(1.0, self.spread),
            )
        self.active += 1
        return Place(self)


class Place:
    """One admitted piece of work; `leave` gives the place back (once, however often called)."""

    __slots__ = ("_admission",)

    def __init__(self, admission: Admission) -> None:
        self._admission: Admission | None = admission

    def leave(self) -> None:
        if self._admission is not None:
            self._admission.active -= 1
            self._admission = None
