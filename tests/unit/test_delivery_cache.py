"""The cache of encoded deliveries: bounded in entries and in bytes, least recently used out
first, and never holding an event it has no room for."""

from __future__ import annotations

from app.delivery import DeliveryCache
from app.model import ChannelKey, Event

KEY = ChannelKey("acme", "/event/Order__e")


def event(replay_id: int, size: int) -> Event:
    return Event(KEY, replay_id, f"u{replay_id}", 0, b"x" * size, "test")


def test_the_same_event_gets_the_same_delivery() -> None:
    cache = DeliveryCache(10, 1 << 20)
    first = cache.get(event(1, 100))

    assert cache.get(event(1, 100)) is first
    assert len(cache) == 1


def test_bytes_bound_evicts_the_least_recently_used() -> None:
    cache = DeliveryCache(100, 3 * (2 * 1000 + 512))
    one, two, three = (cache.get(event(n, 1000)) for n in (1, 2, 3))
    assert cache.get(event(1, 1000)) is one  # used again: now the most recent

    cache.get(event(4, 1000))

    assert len(cache) == 3
    assert cache.size <= 3 * (2 * 1000 + 512)
    assert cache.get(event(1, 1000)) is one
    assert cache.get(event(3, 1000)) is three
    assert cache.get(event(2, 1000)) is not two  # evicted: a fresh one


def test_count_bound_holds_too() -> None:
    cache = DeliveryCache(2, 1 << 20)
    for n in range(5):
        cache.get(event(n, 10))

    assert len(cache) == 2


def test_an_event_larger_than_the_whole_cache_is_delivered_but_not_kept() -> None:
    cache = DeliveryCache(10, 4096)
    kept = cache.get(event(1, 100))

    big = cache.get(event(2, 10_000))

    assert big.event.replay_id == 2
    assert cache.get(event(2, 10_000)) is not big
    assert cache.get(event(1, 100)) is kept


def test_a_zero_byte_cache_keeps_nothing() -> None:
    cache = DeliveryCache(10, 0)
    cache.get(event(1, 1))

    assert (len(cache), cache.size) == (0, 0)
