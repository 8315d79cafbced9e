"""What only the Redis engine does when trimming: besides the count bound every engine keeps
(`app.engine.TRIM_STEP`), one script call stops once it has walked about 8 MiB of entries
(`TRIM_BYTES` in storage/redis/scripts/engine.lua), so large events cannot make one call copy
gigabytes inside Redis."""

from __future__ import annotations

import math
import uuid

from app.engine import TRIM_STEP
from app.model import ChannelKey, EventDraft, Retention, Window
from storage.redis import RedisEngine
from tests.contract._support import KEEP_ALL
from tests.harness.redis import RunningRedis

TRIM_BYTES = 8 * 1024 * 1024
EVENT_BYTES = 512 * 1024
#: The walk stops at the entry that reaches the byte bound; an entry is a little larger than its
#: payload, so this many reach it.
PER_CALL = math.ceil(TRIM_BYTES / EVENT_BYTES)


def _large() -> EventDraft:
    return EventDraft(uuid=str(uuid.uuid4()), payload=b"x" * EVENT_BYTES, created_by="test")


async def test_trimming_large_events_walks_a_bounded_number_of_bytes_per_call(
    redis_server: RunningRedis,
) -> None:
    key = ChannelKey(f"trim-{uuid.uuid4().hex}", "/event/Large__e")
    async with RedisEngine(redis_server.url, 60) as engine:
        ids = [(await engine.publish(key, [_large()], KEEP_ALL))[0].replay_id for _ in range(80)]
        [last] = await engine.publish(key, [_large()], Retention(KEEP_ALL.max_age_us, 1))
        ids.append(last.replay_id)
        windows = [await engine.window(key) for _ in range(5)]

    assert PER_CALL < TRIM_STEP  # so it is the bytes that bound these calls
    # The publish evicted PER_CALL entries, each window call PER_CALL more, until one is left.
    evicted = [min(len(ids) - 1, PER_CALL * calls) for calls in range(2, 7)]
    assert windows == [Window(ids[n], ids[-1], ids[n - 1], len(ids) - n) for n in evicted]
    assert windows[-1].count == 1
