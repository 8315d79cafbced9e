"""Exponential backoff with full jitter, and the server's `Retry-After`."""

from __future__ import annotations

import random

__all__ = ["backoff", "retry_after"]


def backoff(attempt: int, base: float = 0.2, cap: float = 30.0) -> float:
    """Seconds to wait before retry number `attempt` (1, 2, ...): uniformly random up to
    `base * 2**(attempt-1)`, at most `cap`, so many clients do not retry in step."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))


def retry_after(value: str | None) -> float | None:
    """`Retry-After` in seconds (the delta form; an HTTP date is treated as absent)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
