"""Dropping a tenant's keys from Redis, within a deadline, resumable.

A tenant's keys are found by one SCAN pass (per master on a cluster) with a pattern that matches
its keys only (`keys.tenant_pattern`), not through its channel index: a node still serving the
tenant from its cache may write a channel after the index was read, and a process may die
between storing a channel and indexing it. Its Bayeux sessions, whose keys do not carry the
tenant, are found through its session index first. Keys are unlinked batch by batch as they are
found, so memory is bounded by a batch and Redis frees large streams in the background.

The pass walks the whole keyspace, so one call stops at its deadline: it then keeps its SCAN
cursors in Redis (`keys.drop_progress`) and raises EngineUnavailable; a later call may continue
from there. SCAN returns every key that exists for the whole pass, so a continued pass is
complete for the keys that existed when it began: the caller says from when on nothing more
can be written (`since_us`), and a pass begun earlier starts over instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from app.errors import EngineUnavailable
from storage.redis import keys

__all__ = ["drop_tenant"]

_SCAN_COUNT = 1000  # keys Redis looks at per SCAN call
_SESSION_BATCH = 500  # sessions dropped per round trip
_PROGRESS_TTL_MS = 7 * 86_400_000  # an abandoned pass is forgotten after a week
_STARTED = "started"
_DONE = "done"
_STANDALONE = "redis"  # the one node's name in the progress of a standalone Redis


@dataclass(slots=True)
class _Pass:
    started_us: int
    cursors: dict[str, str]  # node name -> SCAN cursor, or _DONE


class _TenantDrop:
    """One call's drop of `tenant` on `client` (standalone or cluster), ending by `deadline`
    (`time.monotonic` seconds)."""

    def __init__(self, client: Any, tenant: str, *, cluster: bool, deadline: float) -> None:
        self._client = client
        self._tenant = tenant
        self._cluster = cluster
        self._deadline = deadline
        self._progress = keys.drop_progress(tenant)
        self.channels: set[str] = set()  # the channels this call dropped keys of

    async def run(self, now_us: int, since_us: int | None) -> None:
        """Drop everything, continuing a pass begun at or after `since_us` (None: start over).
        Each step is checked against the deadline after it is done, so every call makes
        progress; past the deadline it raises _Unfinished with the pass to keep."""
        scan = await self._pass(now_us, since_us)
        await self._drop_sessions(scan)
        nodes = self._nodes()
        for name, node in nodes.items():
            while scan.cursors.get(name) != _DONE:
                cursor = int(scan.cursors.get(name, "0"))
                cursor, found = await self._scan(node, cursor)
                await self._unlink(found)
                scan.cursors[name] = _DONE if cursor == 0 else str(cursor)
                self._check_deadline(scan)
        await self._client.delete(self._progress)

    async def _pass(self, now_us: int, since_us: int | None) -> _Pass:
        saved: dict[bytes, bytes] = await self._client.hgetall(self._progress)
        fields = {name.decode(): value.decode() for name, value in saved.items()}
        started = int(fields.pop(_STARTED, "0") or "0")
        if since_us is not None and fields and started >= since_us:
            return _Pass(started, fields)
        return _Pass(now_us, {})

    async def _drop_sessions(self, scan: _Pass) -> None:
        """Each session's key, then its place in the index, a batch at a time: a later call
        finds the index holding only what is left."""
        index = keys.sessions_of(self._tenant)
        while members := await self._client.zrange(index, 0, _SESSION_BATCH - 1):
            await self._client.unlink(*(keys.session_key(m.decode()) for m in members))
            await self._client.zrem(index, *members)
            self._check_deadline(scan)

    def _nodes(self) -> dict[str, Any]:
        if not self._cluster:
            return {_STANDALONE: None}
        return {node.name: node for node in self._client.get_primaries()}

    async def _scan(self, node: Any, cursor: int) -> tuple[int, list[bytes]]:
        pattern = keys.tenant_pattern(self._tenant)
        if node is None:
            next_cursor, found = await self._client.scan(cursor, match=pattern, count=_SCAN_COUNT)
            return int(next_cursor), found
        cursors, found = await self._client.scan(
            cursor, match=pattern, count=_SCAN_COUNT, target_nodes=node
        )
        return int(cursors[node.name]), found

    async def _unlink(self, found: list[bytes]) -> None:
        if not found:
            return
        for raw in found:
            channel = keys.channel_from_key(raw.decode())
            if channel is not None:
                self.channels.add(channel.name)
        await self._client.unlink(*found)  # per slot on a cluster (redis-py splits them)

    def _check_deadline(self, scan: _Pass) -> None:
        if time.monotonic() < self._deadline:
            return
        raise _Unfinished(scan)

    async def keep(self, scan: _Pass) -> None:
        """Keep an unfinished pass's cursors for a later call."""
        mapping = {_STARTED: str(scan.started_us), **scan.cursors}
        await self._client.hset(self._progress, mapping=mapping)
        await self._client.pexpire(self._progress, _PROGRESS_TTL_MS)


class _Unfinished(Exception):
    def __init__(self, scan: _Pass) -> None:
        super().__init__("the drop's deadline passed")
        self.scan = scan


async def drop_tenant(
    client: Any,
    tenant: str,
    *,
    cluster: bool,
    now_us: int,
    since_us: int | None,
    timeout: float,
) -> int:
    """Drop every key of `tenant` (see the module), spending at most about `timeout` seconds;
    how many channels this call dropped."""
    drop = _TenantDrop(client, tenant, cluster=cluster, deadline=time.monotonic() + timeout)
    try:
        await drop.run(now_us, since_us)
    except _Unfinished as unfinished:
        await drop.keep(unfinished.scan)
        raise EngineUnavailable(
            f"dropping tenant {tenant!r}'s data takes longer than one request may "
            f"({timeout:g} s): send the same request again to go on from where it stopped"
        ) from None
    return len(drop.channels)
