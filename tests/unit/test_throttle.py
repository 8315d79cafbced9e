"""Node-local token buckets: a burst at once, then the rate; per key; bounded table."""

from __future__ import annotations

import pytest

from app.throttle import MAX_KEY_LENGTH, Throttle
from tests.fakes import FakeClock


def test_a_burst_is_allowed_then_the_wait_is_told() -> None:
    throttle = Throttle(FakeClock(), rate=2.0, burst=3)

    assert [throttle.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert throttle.take("a") == pytest.approx(0.5)
    assert throttle.take("a") == pytest.approx(0.5)  # a refusal takes nothing


def test_the_bucket_refills_at_the_rate_up_to_the_burst() -> None:
    clock = FakeClock()
    throttle = Throttle(clock, rate=2.0, burst=3)
    for _ in range(3):
        throttle.take("a")

    clock.advance(0.5)
    assert throttle.take("a") == 0.0
    assert throttle.take("a") > 0
    clock.advance(3600)
    assert [throttle.take("a") for _ in range(4)][:3] == [0.0, 0.0, 0.0]
    assert throttle.take("a") > 0


def test_keys_have_buckets_of_their_own() -> None:
    throttle = Throttle(FakeClock(), rate=1.0, burst=1)

    assert throttle.take("a") == 0.0
    assert throttle.take("a") > 0
    assert throttle.take("b") == 0.0


def test_the_table_is_bounded_and_forgets_the_least_recently_used() -> None:
    throttle = Throttle(FakeClock(), rate=1.0, burst=1, max_keys=3)
    for key in ("a", "b", "c"):
        throttle.take(key)
    throttle.take("a")  # refused, but now the most recently used

    throttle.take("d")  # pushes "b" out

    assert len(throttle) == 3
    assert throttle.take("a") > 0  # still remembered: still empty
    assert throttle.take("b") == 0.0  # forgotten: a full bucket again


def test_long_keys_are_cut_so_memory_stays_bounded() -> None:
    throttle = Throttle(FakeClock(), rate=1.0, burst=1)
    prefix = "x" * MAX_KEY_LENGTH

    assert throttle.take(prefix + "one") == 0.0
    assert throttle.take(prefix + "two") > 0  # the same bucket


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (1.0, 0)])
def test_unusable_limits_are_refused(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="rate must be positive"):
        Throttle(FakeClock(), rate, burst)
