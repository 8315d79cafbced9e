"""This node's sorted list of each tenant's channel names, for wildcard Bayeux sessions: a
connect finds the channels its patterns match by binary search instead of loading every name
of the tenant, each time."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from app.engine import Engine

__all__ = ["ChannelNames"]

#: Bounds on what is kept over all tenants; a tenant with more names than this is not kept.
_MAX_NAMES = 200_000
_MAX_CHARS = 16 * 1024 * 1024
#: A kept list is reloaded after this long even if its count still matches (a tenant dropped
#: and filled again with as many channels under other names).
_MAX_AGE_S = 60.0


class ChannelNames:
    """Each tenant's channel names, sorted. A kept list is whole as long as the engine counts
    as many names as it holds (names are only ever added until the tenant is dropped), so a
    lookup costs one O(1) count, and a full load only when channels were added. The least
    recently used tenants' lists go first past the bounds."""

    def __init__(self, engine: Engine, now: Callable[[], float] = time.monotonic) -> None:
        self._engine = engine
        self._now = now
        self._lists: OrderedDict[str, tuple[list[str], float, int]] = OrderedDict()
        self._names = 0
        self._chars = 0

    async def sorted_names(self, tenant: str) -> list[str]:
        """Every channel of `tenant` (as `Engine.channel_names`), in name order, as of now:
        a channel created before this call began is in it. Callers must not change it."""
        count = await self._engine.channel_count(tenant)
        kept = self._lists.get(tenant)
        if kept is not None:
            names, loaded_at, _ = kept
            if len(names) == count and self._now() - loaded_at < _MAX_AGE_S:
                self._lists.move_to_end(tenant)
                return names
            self._forget(tenant)
        names = sorted(await self._engine.channel_names(tenant))
        self._keep(tenant, names)
        return names

    def _keep(self, tenant: str, names: list[str]) -> None:
        chars = sum(len(name) for name in names)
        if len(names) > _MAX_NAMES or chars > _MAX_CHARS:
            return
        if tenant in self._lists:  # loaded by a concurrent lookup meanwhile
            self._forget(tenant)
        self._lists[tenant] = (names, self._now(), chars)
        self._names += len(names)
        self._chars += chars
        while self._names > _MAX_NAMES or self._chars > _MAX_CHARS:
            self._forget(next(iter(self._lists)))

    def _forget(self, tenant: str) -> None:
        names, _, chars = self._lists.pop(tenant)
        self._names -= len(names)
        self._chars -= chars
