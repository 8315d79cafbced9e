"""Acknowledged means replicated: with `min_replicas`, a publish is acknowledged only once that
many replicas confirmed it (real redis-server processes, a replica started with `--replicaof`).
Fewer in time: NotReplicated, naming the ReplayIds the primary stored, and a retry with the same
idempotency key answers them again, without storing twice, once a replica has them."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.cluster import RedisCluster

from app.errors import EngineUnavailable, NotReplicated
from app.hub import Hub
from app.model import ChannelKey, Published
from app.readiness import ReadinessProbe
from storage.redis import RedisEngine, keys
from tests.contract._support import KEEP_ALL, draft
from tests.harness.redis import RunningRedis, running_redis, running_redis_cluster, running_replica

TTL_S = 60.0
#: How long a publish meant to be refused waits for its replica: short, as it waits it out.
REPLICA_TIMEOUT_S = 0.2
#: How long a publish meant to be confirmed may wait: long, so a busy machine cannot refuse it.
CONFIRM_TIMEOUT_S = 4.0


def _channel() -> ChannelKey:
    return ChannelKey(f"t-{uuid.uuid4().hex[:8]}", "/event/Order__e")


async def _publish(engine: RedisEngine, channel: ChannelKey, key: str) -> Published:
    [ack] = await engine.publish(channel, [draft({"key": key}, idempotency_key=key)], KEEP_ALL)
    return ack


async def _stored_ids(server: RunningRedis, channel: ChannelKey) -> list[int]:
    """The ReplayIds in the channel's stream on `server`, read directly."""
    client = aioredis.Redis(host="127.0.0.1", port=server.port, socket_timeout=10)
    try:
        entries: Any = await client.xrange(keys.channel_keys(channel)[0])
    finally:
        await client.aclose()
    ids = []
    for entry_id, _ in entries:
        ms, _, seq = entry_id.decode().partition("-")
        ids.append(int(ms) * 1000 + int(seq))
    return ids


async def test_a_publish_is_acknowledged_once_a_replica_has_it_and_refused_while_none_does() -> (
    None
):
    channel = _channel()
    with running_redis() as primary:
        engine = RedisEngine(primary.url, TTL_S, min_replicas=1, replica_timeout=CONFIRM_TIMEOUT_S)
        hasty = RedisEngine(primary.url, TTL_S, min_replicas=1, replica_timeout=REPLICA_TIMEOUT_S)
        async with engine, hasty:
            with running_replica(primary.port) as replica:
                confirmed = await _publish(engine, channel, "first")
                assert await _stored_ids(replica, channel) == [confirmed.replay_id]

            # The replica is gone: the primary stores the event, but the publish says so
            # instead of acknowledging it, and so does a retry while no replica has it.
            with pytest.raises(NotReplicated) as refused:
                await _publish(hasty, channel, "second")
            [stored] = refused.value.replay_ids
            assert stored > confirmed.replay_id
            assert f"as ReplayId {stored}" in refused.value.message
            assert "same Idempotency-Key" in refused.value.message
            with pytest.raises(NotReplicated) as refused_again:
                await _publish(hasty, channel, "second")
            assert refused_again.value.replay_ids == [stored]

            with running_replica(primary.port) as replica:
                retried = await _publish(engine, channel, "second")
                assert await _stored_ids(replica, channel) == [confirmed.replay_id, stored]

            page = await engine.read(channel, after=0, limit=10)
    assert (retried.replay_id, retried.duplicate) == (stored, True)
    assert [event.replay_id for event in page.events] == [confirmed.replay_id, stored]


async def test_a_refused_batch_names_each_of_its_replay_ids() -> None:
    channel = _channel()
    with running_redis() as primary:
        async with RedisEngine(
            primary.url, TTL_S, min_replicas=1, replica_timeout=REPLICA_TIMEOUT_S
        ) as engine:
            batch = [draft({"n": n}) for n in range(3)]
            with pytest.raises(NotReplicated) as refused:
                await engine.publish(channel, batch, KEEP_ALL)
            page = await engine.read(channel, after=0, limit=10)
    ids = refused.value.replay_ids
    assert ids == [event.replay_id for event in page.events]
    assert f"3 event(s) stored on the Redis primary as ReplayId {ids[0]} to {ids[-1]}" in (
        refused.value.message
    )


async def test_callers_sharing_a_round_each_hear_of_their_own_events() -> None:
    channel = _channel()
    with running_redis() as primary:
        async with RedisEngine(
            primary.url, TTL_S, min_replicas=1, replica_timeout=REPLICA_TIMEOUT_S
        ) as engine:
            outcomes = await asyncio.gather(
                *(engine.publish(channel, [draft({"n": n})], KEEP_ALL) for n in range(4)),
                return_exceptions=True,
            )
            page = await engine.read(channel, after=0, limit=10)
    assert all(isinstance(outcome, NotReplicated) for outcome in outcomes), outcomes
    named = [outcome.replay_ids for outcome in outcomes if isinstance(outcome, NotReplicated)]
    assert named == [[event.replay_id] for event in page.events]


async def test_a_script_the_redis_forgot_is_loaded_again_before_the_wait() -> None:
    channel = _channel()
    with running_redis() as primary, running_replica(primary.port):
        async with RedisEngine(
            primary.url, TTL_S, min_replicas=1, replica_timeout=CONFIRM_TIMEOUT_S
        ) as engine:
            first = await _publish(engine, channel, "a")
            raw = aioredis.Redis(host="127.0.0.1", port=primary.port, socket_timeout=10)
            await raw.script_flush()
            await raw.aclose()
            second = await _publish(engine, channel, "b")
    assert second.replay_id > first.replay_id


@pytest.mark.parametrize(
    ("extra", "found"),
    [
        pytest.param([], "appendonly no, appendfsync everysec", id="no-aof"),
        pytest.param(
            ["--appendonly", "yes", "--appendfsync", "everysec"],
            "appendonly yes, appendfsync everysec",
            id="aof-everysec",
        ),
    ],
)
async def test_fsync_always_refuses_to_start_on_a_redis_that_does_not_fsync_each_write(
    extra: list[str], found: str
) -> None:
    with running_redis(extra) as server, pytest.raises(EngineUnavailable) as refused:
        async with RedisEngine(server.url, TTL_S, fsync_always=True):
            pass
    assert refused.value.message.endswith(f"this Redis has {found}")
    assert "appendonly yes and appendfsync always" in refused.value.message


async def test_fsync_always_starts_on_a_redis_that_fsyncs_each_write(tmp_path: Path) -> None:
    aof = ["--appendonly", "yes", "--appendfsync", "always"]
    with running_redis(aof, directory=tmp_path) as server:
        async with RedisEngine(server.url, TTL_S, fsync_always=True) as engine:
            ack = await _publish(engine, _channel(), "k")
    assert ack.replay_id > 0


async def test_fsync_always_says_so_when_redis_refuses_config() -> None:
    renamed = ["--rename-command", "CONFIG", "CONFIG-RENAMED"]
    with running_redis(renamed) as server, pytest.raises(EngineUnavailable) as refused:
        async with RedisEngine(server.url, TTL_S, fsync_always=True):
            pass
    assert "this Redis refuses CONFIG GET" in refused.value.message


async def test_on_a_cluster_a_publish_waits_for_the_replicas_of_its_channels_master() -> None:
    channel = _channel()
    meta = keys.channel_keys(channel)[1]
    with running_redis_cluster(3) as cluster:
        with RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port) as mapped:
            master_port = int(mapped.get_node_from_key(meta).port)
        options: dict[str, Any] = {"cluster": True, "min_replicas": 1}
        engine = RedisEngine(cluster.url, TTL_S, replica_timeout=CONFIRM_TIMEOUT_S, **options)
        hasty = RedisEngine(cluster.url, TTL_S, replica_timeout=REPLICA_TIMEOUT_S, **options)
        async with engine, hasty:
            with pytest.raises(NotReplicated) as refused:
                await _publish(hasty, channel, "unreplicated")
            with running_replica(master_port) as replica:
                retried = await _publish(engine, channel, "unreplicated")
                confirmed = await _publish(engine, channel, "replicated")
                on_replica = await _stored_ids(replica, channel)

    assert (retried.replay_id, retried.duplicate) == (refused.value.replay_ids[0], True)
    assert on_replica == [retried.replay_id, confirmed.replay_id]


async def test_a_node_stays_ready_while_no_replica_confirms() -> None:
    """Its canary is stored and comes back live: the node serves reads and subscribers, and a
    load balancer must not take every node out for a replica's absence."""
    with running_redis() as primary:
        engine = RedisEngine(primary.url, TTL_S, min_replicas=1, replica_timeout=REPLICA_TIMEOUT_S)
        async with engine, Hub(engine) as hub:
            await ReadinessProbe(engine, hub, timeout=CONFIRM_TIMEOUT_S).check()
