"""When the Redis live feed counts a pub/sub connection as dead: only once a ping has gone
unanswered for the patience, never for mere silence (a reader busy catching up, a slow pong)."""

from __future__ import annotations

from storage.redis.live import _Liveness

PING_INTERVAL = 5.0
PATIENCE = 5.0


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _liveness(clock: _Clock) -> _Liveness:
    return _Liveness(PING_INTERVAL, PATIENCE, clock)


def test_a_busy_reader_and_a_slow_pong_are_not_a_dead_connection() -> None:
    clock = _Clock()
    liveness = _liveness(clock)
    clock.now += 9.0  # the reader was busy (a catch-up) and read nothing for 9 s
    assert liveness.ping_due()
    clock.now += 1.5  # the pong takes 1.5 s

    assert liveness.unanswered_for() is None
    liveness.heard()
    assert liveness.unanswered_for() is None


def test_a_ping_unanswered_beyond_the_patience_is_a_dead_connection() -> None:
    clock = _Clock()
    liveness = _liveness(clock)
    clock.now += PING_INTERVAL
    assert liveness.ping_due()

    clock.now += PATIENCE
    assert liveness.unanswered_for() is None
    clock.now += 0.5
    assert liveness.unanswered_for() == PATIENCE + 0.5


def test_an_unanswered_ping_is_not_replaced_by_another() -> None:
    clock = _Clock()
    liveness = _liveness(clock)
    clock.now += PING_INTERVAL
    assert liveness.ping_due()

    clock.now += PATIENCE  # still no answer: pinging again would restart the count
    assert not liveness.ping_due()
    clock.now += 0.5
    assert liveness.unanswered_for() == PATIENCE + 0.5


def test_a_connection_that_keeps_talking_is_not_pinged() -> None:
    clock = _Clock()
    liveness = _liveness(clock)
    for _ in range(10):
        clock.now += PING_INTERVAL - 1
        liveness.heard()
        assert not liveness.ping_due()
    assert liveness.unanswered_for() is None


def test_after_an_answer_the_next_ping_waits_for_the_interval() -> None:
    clock = _Clock()
    liveness = _liveness(clock)
    clock.now += PING_INTERVAL
    assert liveness.ping_due()
    clock.now += 0.2
    liveness.heard()  # the pong

    clock.now += PING_INTERVAL - 0.1
    assert not liveness.ping_due()
    clock.now += 0.1
    assert liveness.ping_due()
