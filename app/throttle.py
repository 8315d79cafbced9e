"""Node-local token buckets, one per key (a client address, a client id), in a bounded
least-recently-used table.

Each worker process keeps its own buckets, so with N nodes of W workers behind a load balancer
a key gets up to N * W times the rate. A key pushed out of a full table starts again with a full
bucket, which only ever favours that key; the table's size bounds the memory an attacker can make
it use.
"""

from __future__ import annotations

from collections import OrderedDict

from app.clock import Clock

__all__ = ["Throttle"]

MAX_KEY_LENGTH = 256


class Throttle:
    def __init__(self, clock: Clock, rate: float, burst: int, max_keys: int = 10_000) -> None:
        """`rate` per second, sustained; `burst` at once. Keys longer than MAX_KEY_LENGTH are
        cut to it, so the table's memory is bounded by `max_keys` whatever callers pass."""
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate must be positive, burst and max_keys at least 1")
        self._clock = clock
        self._rate = rate
        self._burst = float(burst)
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> float:
        """Take one from `key`'s bucket: 0.0 when taken, otherwise the seconds until one will
        be there (and nothing is taken)."""
        key = key[:MAX_KEY_LENGTH]
        now = self._clock.monotonic()
        tokens, at = self._buckets.pop(key, (self._burst, now))
        tokens = min(self._burst, tokens + max(0.0, now - at) * self._rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self._rate
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return wait

    def __len__(self) -> int:
        return len(self._buckets)
