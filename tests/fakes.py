"""Test doubles for injected dependencies."""

from __future__ import annotations


class FakeClock:
    """A clock that moves only when told to (wall time in µs, monotonic in seconds)."""

    def __init__(self, now_us: int = 1_700_000_000_000_000) -> None:
        self.wall_us = now_us
        self.mono = 1000.0

    def now_us(self) -> int:
        return self.wall_us

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall_us += int(seconds * 1_000_000)
        self.mono += seconds

    def set_wall(self, now_us: int) -> None:
        """Move wall time anywhere, backwards too (monotonic time is untouched)."""
        self.wall_us = now_us
