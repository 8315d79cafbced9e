"""Checking client secrets and user passwords at a bounded cost per worker process.

A secret check is a deliberately slow scrypt hash (about 16 MiB and tens of milliseconds), so
the token endpoint is where an anonymous caller could spend a node's CPU and memory. Here:

- a secret proven correct is remembered for a short while under a keyed digest of (identity,
  secret, stored hash), so a well-behaved client asking again is not hashed again, and a
  rotated secret (a new stored hash) is never found under the old entry; requests with the
  same credentials while their check runs share it (many workers of one client starting at
  once cost one hash);
- at most `concurrency` hashes run at once, in threads; one more is refused at once with
  Overloaded, never queued;
- checks that would hash, and attempts naming identities that do not exist, are limited per
  identity (QuotaExceeded with the wait), so guessing one client's secret is slow on every node;
- an identity that does not exist is refused after awaiting about as long as a hash takes
  here (measured), without hashing: it costs a timer, not CPU, and looks the same from outside.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from app.admission import Admission
from app.clock import Clock
from app.credentials import unmatchable_hash, verify_secret
from app.errors import QuotaExceeded
from app.throttle import Throttle

__all__ = ["CredentialGuard", "hash_concurrency"]

_CACHE_ENTRIES = 10_000  # 32-byte digests: well under 2 MB
_SMOOTHING = 0.2  # weight of the newest measurement in the moving average


def _unobserved(result: str) -> None:
    pass


def hash_concurrency(configured: int | None, cores: int | None, workers: int) -> int:
    """Hashes one worker process may run at once: `configured`, or by default its share of the
    node's `cores` (at least 1), since each of the `workers` processes has its own guard."""
    if configured is not None:
        return configured
    return max(1, (cores or 1) // workers)


class CredentialGuard:
    def __init__(
        self,
        clock: Clock,
        *,
        concurrency: int,
        cache_ttl: float,
        rate: float,
        burst: int,
        retry_spread: float = 1.0,
        verify: Callable[[str, str], bool] = verify_secret,
        on_check: Callable[[str], None] = _unobserved,
        on_refused: Callable[[str], None] = _unobserved,
        timer: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """`verify(secret, stored_hash)` is the hash check (`app.credentials.verify_secret`).
        `on_check` is told each check's path: "cached", "hashed" or "unknown"; `on_refused`
        each refusal: "identity_limit" or "busy". `timer` measures hashes, `sleep` awaits the
        unknown identities' share (both real time: the point is the time callers see)."""
        self._clock = clock
        self._verify = verify
        self._on_check = on_check
        self._on_refused = on_refused
        self._timer = timer
        self._sleep = sleep
        self._cache_ttl = cache_ttl
        self._cache: OrderedDict[bytes, float] = OrderedDict()
        self._key = secrets.token_bytes(32)
        self._throttle = Throttle(clock, rate, burst)
        self._hashing = Admission(
            "credential checks", concurrency, retry_spread, lambda: on_refused("busy")
        )
        self._hash_seconds: float | None = None  # moving average of a check; None before one
        self._calibration: asyncio.Future[bool] | None = None
        self._checking: dict[bytes, asyncio.Future[bool]] = {}  # at most `concurrency`

    def limit(self, identity: str) -> None:
        """Count an attempt for `identity`; raise QuotaExceeded (with the wait) past its rate."""
        wait = self._throttle.take(identity)
        if wait > 0:
            self._on_refused("identity_limit")
            raise QuotaExceeded(
                f"too many attempts for {identity.partition(':')[2] or identity}: retry later",
                retry_after=wait,
            )

    async def verify(self, identity: str, secret: str, stored_hash: str) -> bool:
        """Whether `secret` matches `stored_hash`, the stored hash of `identity` (a kind and a
        name, such as "client:rb_12ab"). Raises QuotaExceeded or Overloaded (nothing was
        checked) when it would have to hash and may not now."""
        digest = self._digest(identity, secret, stored_hash)
        expires = self._cache.get(digest)
        now = self._clock.monotonic()
        if expires is not None and expires > now:
            self._cache.move_to_end(digest)
            self._on_check("cached")
            return True
        checking = self._checking.get(digest)
        if checking is not None:
            self._on_check("cached")
            return await asyncio.shield(checking)
        self.limit(identity)
        checking = self._start_hash(secret, stored_hash)
        self._on_check("hashed")
        self._checking[digest] = checking
        checking.add_done_callback(lambda done: self._checked(digest, done))
        return await asyncio.shield(checking)

    def _checked(self, digest: bytes, done: asyncio.Future[bool]) -> None:
        """Remember a proven secret (even if its caller has gone) before the check stops
        being shared, so nobody misses both."""
        del self._checking[digest]
        if done.cancelled() or done.exception() is not None or not done.result():
            return
        if self._cache_ttl > 0:
            self._cache.pop(digest, None)
            self._cache[digest] = self._clock.monotonic() + self._cache_ttl
            if len(self._cache) > _CACHE_ENTRIES:
                self._cache.popitem(last=False)

    async def refuse_unknown(self, identity: str) -> None:
        """Take as long as checking a secret of `identity` would, without hashing, for an
        identity that does not exist. Raises QuotaExceeded past the identity's rate."""
        self.limit(identity)
        self._on_check("unknown")
        if self._hash_seconds is None:
            await self._calibrate()
        await self._sleep(self._hash_seconds or 0.0)

    async def _calibrate(self) -> None:
        """One real check against a hash nothing matches, shared by every caller waiting
        meanwhile, so the first unknown identity is answered in the same time shape as the
        rest. Overloaded like any check when the hashing places are taken."""
        calibration = self._calibration
        if calibration is None:
            calibration = self._start_hash("", unmatchable_hash())
            calibration.add_done_callback(self._calibrated)
            self._calibration = calibration
        await asyncio.shield(calibration)

    def _calibrated(self, done: asyncio.Future[bool]) -> None:
        if done.cancelled() or done.exception() is not None:
            self._calibration = None  # the next unknown identity tries again

    def _start_hash(self, secret: str, stored_hash: str) -> asyncio.Future[bool]:
        """The hash check, started in a thread; raises Overloaded at once past the limit
        (refused, never queued)."""
        place = self._hashing.enter()
        started = self._timer()

        def finished(done: asyncio.Future[bool]) -> None:
            # Runs when the thread is done even if the caller has gone: the place is held as
            # long as the CPU is busy, so the limit is honest.
            place.leave()
            if not done.cancelled() and done.exception() is None:
                self._measured(self._timer() - started)

        task = asyncio.ensure_future(asyncio.to_thread(self._verify, secret, stored_hash))
        task.add_done_callback(finished)
        return task

    def _measured(self, seconds: float) -> None:
        previous = self._hash_seconds
        self._hash_seconds = (
            seconds if previous is None else previous + _SMOOTHING * (seconds - previous)
        )

    def _digest(self, identity: str, secret: str, stored_hash: str) -> bytes:
        message = "\n".join(f"{len(part)}:{part}" for part in (identity, secret, stored_hash))
        return hmac.new(self._key, message.encode(), hashlib.sha256).digest()
