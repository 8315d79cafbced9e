"""The store's birth mark: a position from before the store lost (or may have lost) its data
is a gap, and one from a store that lost nothing resumes exactly."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot

from app.engine import TRIM_STEP
from app.model import ChannelKey
from app.recovery import Gap, Recovered, recover
from storage.memory import MemoryEngine
from storage.redis import RedisEngine, keys
from tests.contract._support import KEEP_ALL, draft, publish_one
from tests.fakes import FakeClock
from tests.harness.redis import running_redis, running_redis_cluster, running_replica


def a_channel() -> ChannelKey:
    return ChannelKey(f"birth-{uuid.uuid4().hex}", "/event/Order__e")


async def test_a_memory_store_started_again_reports_every_older_position_as_a_gap() -> None:
    clock, channel = FakeClock(), a_channel()
    async with MemoryEngine(clock, 60) as before:
        position = (await publish_one(before, channel, KEEP_ALL)).replay_id
    clock.advance(5)
    async with MemoryEngine(clock, 60) as after:
        assert isinstance(recover(position, await after.window(channel)), Gap)
        await publish_one(after, channel, KEEP_ALL)
        assert isinstance(recover(position, await after.window(channel)), Gap)


@pytest.mark.parametrize(
    ("fsync_always", "resumable"),
    [
        pytest.param(False, False, id="writes-not-fsynced"),
        pytest.param(True, True, id="writes-fsynced"),
    ],
)
async def test_a_restart_from_the_aof_keeps_positions_only_if_writes_waited_for_the_fsync(
    tmp_path: Path, fsync_always: bool, resumable: bool
) -> None:
    channel = a_channel()
    aof = ["--appendonly", "yes", "--appendfsync", "always"]
    with running_redis(aof, directory=tmp_path) as store:
        async with RedisEngine(store.url, 60, fsync_always=fsync_always) as engine:
            position = (await publish_one(engine, channel, KEEP_ALL)).replay_id
    with running_redis(aof, directory=tmp_path) as store:
        async with RedisEngine(store.url, 60, fsync_always=fsync_always) as engine:
            later = await publish_one(engine, channel, KEEP_ALL)
            window = await engine.window(channel)
            page = await engine.read(channel, position, 10)

    assert later.replay_id > position
    decision = recover(position, window)
    if resumable:
        assert decision == Recovered(after=position)
        assert [event.replay_id for event in page.events] == [later.replay_id]
        assert window.count == 2
    else:
        # The AOF kept the first event, but nothing vouches for it: it is served to no one
        # and dropped, so the window is what was stored since.
        assert isinstance(decision, Gap)
        assert decision.requested == position
        assert (window.earliest, window.count) == (later.replay_id, 1)


async def test_a_channel_meta_without_an_epoch_keeps_its_positions() -> None:
    channel = a_channel()
    with running_redis() as store:
        async with RedisEngine(store.url, 60) as engine:
            position = (await publish_one(engine, channel, KEEP_ALL)).replay_id
            with redis.Redis(host="127.0.0.1", port=store.port) as raw:
                raw.hdel(keys.channel_keys(channel)[1], "epoch")
                raw.delete(keys.birth_key(channel, cluster=False))
            later = await publish_one(engine, channel, KEEP_ALL)
            window = await engine.window(channel)

    assert recover(position, window) == Recovered(after=position)
    assert later.replay_id > position


async def test_a_cluster_node_that_lost_its_data_reports_a_gap_for_its_channels() -> None:
    channel = a_channel()
    with running_redis_cluster(3) as cluster:
        async with RedisEngine(cluster.url, 60, cluster=True) as engine:
            position = (await publish_one(engine, channel, KEEP_ALL)).replay_id
            slot = key_slot(keys.channel_keys(channel)[1].encode())
            for node in cluster.nodes:
                with redis.Redis(host="127.0.0.1", port=node.port) as raw:
                    if raw.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot):
                        raw.flushall()  # only the node holding the channel loses its data
            await publish_one(engine, channel, KEEP_ALL)
            window = await engine.window(channel)

    assert isinstance(recover(position, window), Gap)
    assert window.low_water > position


def test_every_hash_slot_has_a_birth_mark_tag_in_it() -> None:
    tags = keys.slot_tags()
    assert len(tags) == 16384
    assert all(key_slot(("{" + tag + "}").encode()) == slot for slot, tag in enumerate(tags))


def test_a_channels_birth_mark_is_in_the_channels_own_slot() -> None:
    channel = a_channel()
    birth = keys.birth_key(channel, cluster=True).encode()
    assert key_slot(birth) == key_slot(keys.channel_keys(channel)[1].encode())


async def test_a_first_replica_attaching_keeps_every_position() -> None:
    """Redis gives a primary a new replication id when its first replica attaches; the data
    is the same, so the birth mark stays."""
    channel = a_channel()
    with running_redis() as primary:
        async with RedisEngine(primary.url, 60) as engine:
            position = (await publish_one(engine, channel, KEEP_ALL)).replay_id
            with running_replica(primary.port):
                later = await publish_one(engine, channel, KEEP_ALL)
                window = await engine.window(channel)

    assert recover(position, window) == Recovered(after=position)
    assert window.count == 2
    assert later.replay_id > position


async def test_a_primary_restarted_from_a_snapshot_is_not_taken_for_a_promoted_replica(
    tmp_path: Path,
) -> None:
    """A snapshot taken while a replica was attached brings the old replication id back as
    `master_replid2`, as a promotion would; but this process started after the data's last
    write, so what came after the snapshot may be lost: every older position is a gap."""
    channel = a_channel()
    with running_redis(directory=tmp_path) as primary, running_replica(primary.port):
        async with RedisEngine(primary.url, 60, min_replicas=1, replica_timeout=4) as engine:
            snapshot = (await publish_one(engine, channel, KEEP_ALL)).replay_id
            with redis.Redis(host="127.0.0.1", port=primary.port) as raw:
                raw.save()
            lost = (await publish_one(engine, channel, KEEP_ALL)).replay_id
        primary.process.kill()
        primary.process.wait()
        with running_redis(port=primary.port, directory=tmp_path) as restarted:
            async with RedisEngine(restarted.url, 60, min_replicas=1) as engine:
                window = await engine.window(channel)

    assert isinstance(recover(snapshot, window), Gap)
    assert isinstance(recover(lost, window), Gap)


async def test_a_retry_of_an_event_the_birth_mark_moved_over_stores_it_again(
    tmp_path: Path,
) -> None:
    channel = a_channel()
    aof = ["--appendonly", "yes", "--appendfsync", "always"]
    keyed = draft({"n": 1}, idempotency_key="order-1")
    with running_redis(aof, directory=tmp_path) as store:
        async with RedisEngine(store.url, 60) as engine:
            [first] = await engine.publish(channel, [keyed], KEEP_ALL)
    with running_redis(aof, directory=tmp_path) as store:
        async with RedisEngine(store.url, 60) as engine:
            [retried] = await engine.publish(channel, [keyed], KEEP_ALL)
            page = await engine.read(channel, 0, 10)

    assert not retried.duplicate
    assert retried.replay_id > first.replay_id
    assert [event.replay_id for event in page.events] == [retried.replay_id]


async def test_entries_a_moved_birth_mark_buried_are_never_served(tmp_path: Path) -> None:
    """More than one trim step of them: reads skip them while trimming drops them."""
    channel = a_channel()
    aof = ["--appendonly", "yes", "--appendfsync", "always"]
    with running_redis(aof, directory=tmp_path) as store:
        async with RedisEngine(store.url, 60) as engine:
            batch = [draft({"n": n}) for n in range(TRIM_STEP + 500)]
            await engine.publish(channel, batch, KEEP_ALL)
    with running_redis(aof, directory=tmp_path) as store:
        async with RedisEngine(store.url, 60) as engine:
            page = await engine.read(channel, 0, 10)
            window = await engine.window(channel)

    assert page.events == ()
    assert (window.earliest, window.count) == (None, 0)
