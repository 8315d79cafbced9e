"""A node's limit on how much of one kind of expensive work it starts at once (replays from
history, Bayeux handshakes), and on how many streams it holds open (`StreamCaps`). It never
queues: past the limit the caller is refused with a jittered retry delay, so a reconnect storm
is turned away in spread-out waves instead of piling up until the node falls over."""

from __future__ import annotations

import random
from collections.abc import Callable

from app.errors import Overloaded, TooManySubscribers

__all__ = ["Admission", "Place", "StreamCaps", "jittered"]

#: Retry-After of a client refused for holding too many streams: it must close one first.
_CLIENT_RETRY_S = 5.0


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


class StreamCaps:
    """The streams this process holds open: at most `limit` in all (past it: Overloaded, a
    503 with a jittered retry) and at most a given number per client (past it:
    TooManySubscribers, a 429), so neither one client nor many can exhaust the node."""

    def __init__(
        self, limit: int, spread: float, on_refused: Callable[[], None] | None = None
    ) -> None:
        self._all = Admission("SSE streams", limit, spread, on_refused)
        self._per_client: dict[tuple[str, str], int] = {}

    @property
    def active(self) -> int:
        return self._all.active

    def enter(self, client: tuple[str, str], per_client: int) -> Callable[[], None]:
        """Count one more stream of `client` (tenant, identity); returns its release (safe to
        call more than once). Raises TooManySubscribers or Overloaded, counting nothing."""
        held = self._per_client.get(client, 0)
        if held >= per_client:
            raise TooManySubscribers(
                f"this client already holds its maximum of {per_client} concurrent streams on "
                "this node: close one before opening another",
                retry_after=_CLIENT_RETRY_S,
            )
        place = self._all.enter()
        self._per_client[client] = held + 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            place.leave()
            left = self._per_client[client] - 1
            if left:
                self._per_client[client] = left
            else:
                del self._per_client[client]

        return release
