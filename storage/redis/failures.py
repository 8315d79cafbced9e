"""Redis failures as the domain sees them: `EngineUnavailable` with a message fit for clients.
The driver's own text names Redis's host and port, so it goes to the log, never to a client."""

from __future__ import annotations

import logging

from redis.exceptions import RedisClusterException, RedisError

from app.errors import EngineUnavailable
from storage.failures import describe

__all__ = ["DRIVER_ERRORS", "unavailable"]

log = logging.getLogger("replaybus.redis")

#: What a Redis call may raise when Redis fails: redis-py's errors (cluster ones included, which
#: are not RedisErrors, such as an unreachable cluster or an uncovered slot) and socket errors.
DRIVER_ERRORS: tuple[type[Exception], ...] = (RedisError, RedisClusterException, OSError)


def unavailable(
    error: BaseException, doing: str, message: str = "the event store is unavailable"
) -> EngineUnavailable:
    """Log what failed `doing` what, and return the error to raise in its place."""
    log.warning("Redis failed %s: %s", doing, describe(error))
    return EngineUnavailable(message)
