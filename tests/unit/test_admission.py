"""`Admission`: a node's limit on concurrent expensive work. Places are taken and given back,
refusals never queue, are reported, and tell the caller to come back after a jittered delay."""

from __future__ import annotations

import pytest

from app.admission import Admission, jittered
from app.errors import Overloaded

DRAWS = 500


def test_places_are_taken_up_to_the_limit_and_given_back() -> None:
    admission = Admission("replays", limit=2, spread=0.0)

    first = admission.enter()
    second = admission.enter()
    assert admission.active == 2
    with pytest.raises(Overloaded):
        admission.enter()
    assert admission.active == 2  # a refusal takes nothing

    first.leave()
    assert admission.active == 1
    third = admission.enter()  # the freed place is available again
    assert admission.active == 2

    second.leave()
    third.leave()
    assert admission.active == 0


def test_leaving_twice_gives_back_one_place_only() -> None:
    admission = Admission("replays", limit=2, spread=0.0)
    kept = admission.enter()
    left = admission.enter()

    left.leave()
    left.leave()
    left.leave()

    assert admission.active == 1
    kept.leave()
    assert admission.active == 0


def test_a_refusal_calls_the_refused_callback_once_per_refusal() -> None:
    refusals: list[str] = []
    admission = Admission(
        "handshakes", limit=1, spread=0.0, on_refused=lambda: refusals.append("refused")
    )
    place = admission.enter()
    assert refusals == []  # admitted work is not a refusal

    for _ in range(3):
        with pytest.raises(Overloaded):
            admission.enter()
    assert refusals == ["refused"] * 3

    place.leave()
    admission.enter()
    assert refusals == ["refused"] * 3


def test_the_refusal_names_the_kind_and_the_limit() -> None:
    admission = Admission("handshakes", limit=1, spread=0.0)
    admission.enter()

    with pytest.raises(Overloaded) as refused:
        admission.enter()

    assert "maximum of 1 concurrent handshakes" in refused.value.message


def test_retry_after_is_one_second_plus_at_most_the_spread_and_varies() -> None:
    spread = 2.0
    admission = Admission("replays", limit=1, spread=spread)
    admission.enter()

    delays = []
    for _ in range(DRAWS):
        with pytest.raises(Overloaded) as refused:
            admission.enter()
        delays.append(refused.value.retry_after)

    assert all(1.0 <= delay <= 1.0 + spread for delay in delays), (min(delays), max(delays))
    # Spread out, not one value: refused clients must not all come back together. With 500
    # uniform draws each half of the range is hit (failing odds about 2**-499).
    assert min(delays) < 1.0 + spread / 2 < max(delays)


def test_retry_after_without_spread_is_exactly_one_second() -> None:
    admission = Admission("replays", limit=1, spread=0.0)
    admission.enter()

    with pytest.raises(Overloaded) as refused:
        admission.enter()

    assert refused.value.retry_after == 1.0


@pytest.mark.parametrize(("base", "spread"), [(0.0, 5.0), (2.0, 0.5), (1.0, 0.0)])
def test_jittered_stays_within_base_and_base_plus_spread(base: float, spread: float) -> None:
    values = [jittered(base, spread) for _ in range(DRAWS)]

    assert all(base <= value <= base + spread for value in values)
    if spread == 0.0:
        assert set(values) == {base}
    else:
        assert min(values) < base + spread / 2 < max(values)
