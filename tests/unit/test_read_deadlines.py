"""The HTTP protocol's read deadlines: one timer per connection, on a fake event loop."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

from api.server import read_timeout_protocol


class _Handle:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class _FakeLoop:
    """`time`, `call_at` and a way to let time pass, running what falls due in order."""

    def __init__(self) -> None:
        self.now = 0.0
        self._due: list[tuple[float, int, _Handle, Callable[[], None]]] = []
        self._order = itertools.count()
        self.timers_made = 0

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> _Handle:
        handle = _Handle()
        self.timers_made += 1
        heapq.heappush(self._due, (when, next(self._order), handle, callback))
        return handle

    def advance_to(self, when: float) -> None:
        while self._due and self._due[0][0] <= when:
            due, _, handle, callback = heapq.heappop(self._due)
            self.now = max(self.now, due)
            if not handle.cancelled:
                callback()
        self.now = when


def _protocol(loop: _FakeLoop, header_timeout: float, body_timeout: float) -> Any:
    """The deadline part of the protocol alone (no transport, no parser)."""
    cls = read_timeout_protocol(header_timeout, body_timeout)
    protocol: Any = cls.__new__(cls)
    protocol.loop = loop
    protocol._timer = None
    protocol._step = min(header_timeout, body_timeout)
    protocol._deadline = 0.0
    protocol._expire = None
    return protocol


def test_a_deadline_moved_later_expires_at_the_new_time_only() -> None:
    loop = _FakeLoop()
    protocol = _protocol(loop, header_timeout=10, body_timeout=60)
    expired: list[float] = []

    protocol._arm(10, lambda: expired.append(loop.now))
    loop.advance_to(5)
    protocol._arm(60, lambda: expired.append(loop.now))
    loop.advance_to(64)
    assert expired == []
    loop.advance_to(100)

    assert expired == [65]


def test_a_shorter_deadline_after_a_longer_one_is_kept() -> None:
    loop = _FakeLoop()
    protocol = _protocol(loop, header_timeout=10, body_timeout=1)
    expired: list[float] = []

    protocol._arm(10, lambda: expired.append(loop.now))
    loop.advance_to(0.5)
    protocol._arm(1, lambda: expired.append(loop.now))
    loop.advance_to(20)

    assert expired == [1.5]


def test_a_disarmed_deadline_never_expires_and_the_next_one_does() -> None:
    loop = _FakeLoop()
    protocol = _protocol(loop, header_timeout=10, body_timeout=60)
    expired: list[str] = []

    protocol._arm(10, lambda: expired.append("first"))
    protocol._disarm()
    loop.advance_to(100)
    protocol._arm(10, lambda: expired.append("second"))
    loop.advance_to(109)
    assert expired == []
    loop.advance_to(110)

    assert expired == ["second"]


def test_requests_on_one_connection_share_its_timer() -> None:
    loop = _FakeLoop()
    protocol = _protocol(loop, header_timeout=10, body_timeout=60)
    expired: list[float] = []

    for request in range(1000):  # each: headers, then body, then complete, 1 ms apart
        loop.advance_to(request * 0.003)
        protocol._arm(10, lambda: expired.append(loop.now))
        loop.advance_to(request * 0.003 + 0.001)
        protocol._arm(60, lambda: expired.append(loop.now))
        loop.advance_to(request * 0.003 + 0.002)
        protocol._disarm()

    assert expired == []
    assert loop.timers_made == 1
