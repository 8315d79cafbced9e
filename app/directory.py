"""The hot path's view of the catalog: tenants, clients, users and channel definitions cached
with bounded staleness (absent ones too, so unknown names cost one catalog read per TTL).

Every entry is re-read once it is older than the TTL, so a suspension or a revocation reaches
every node within the TTL (plus one request's round trip to the catalog). While the catalog is
unreachable, entries already known stay in use for `max_stale` past their TTL, so publishing and
subscribing carry on through a short outage; after that, and for a tenant or client this node
has never seen, lookups raise CatalogUnavailable. So a node cut off from the catalog stops
serving a deleted tenant or a revoked client after at most TTL + `max_stale`.

Each cache is bounded: names found and names absent are kept apart, each table pushing out its
least recently used entry when full, so a flood of names that exist nowhere (which anyone can
send) only ever displaces other absent names, never the clients and tenants in use.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from app.access import Principal
from app.catalog import Catalog, ChannelDefinition, ClientRecord, Tenant, UserRecord
from app.clock import Clock
from app.errors import CatalogUnavailable, TenantSuspended, TokenInvalid

__all__ = ["Directory"]

log = logging.getLogger("replaybus.directory")
T = TypeVar("T")
_MAX_ENTRIES = 100_000  # names found, per cache
_MAX_ABSENT = 20_000  # names absent, per cache
_RETRY_US = 1_000_000  # while the catalog is down, how often one entry tries it again


@dataclass(slots=True)
class _Entry(Generic[T]):
    value: T | None
    fresh_until_us: int
    usable_until_us: int  # the latest it may be served while the catalog cannot be read
    stale: bool = False  # kept because the catalog could not be read


class _Cache(Generic[T]):
    def __init__(
        self,
        clock: Clock,
        ttl_us: int,
        max_stale_us: int,
        load: Callable[[str], Awaitable[T | None]],
        on_lookup: Callable[[str], None],
    ):
        self._on_lookup = on_lookup
        self._clock = clock
        self._ttl_us = ttl_us
        self._max_stale_us = max_stale_us
        self._load = load
        # Least recently used first; an entry is in one table or the other, never both.
        self._found: OrderedDict[str, _Entry[T]] = OrderedDict()
        self._absent: OrderedDict[str, _Entry[T]] = OrderedDict()
        self._bounds = ((self._found, _MAX_ENTRIES), (self._absent, _MAX_ABSENT))
        # One read per key at a time; `forget` drops a key's, so a read begun before it is
        # neither joined nor cached after.
        self._loading: dict[str, asyncio.Future[tuple[T | None, bool]]] = {}
        self.hits = 0
        self.misses = 0

    def _entry(self, key: str) -> _Entry[T] | None:
        for table, _ in self._bounds:
            entry = table.get(key)
            if entry is not None:
                table.move_to_end(key)
                return entry
        return None

    async def get(self, key: str) -> T | None:
        entry = self._entry(key)
        if entry is not None and entry.fresh_until_us > self._clock.now_us():
            self.hits += 1
            self._on_lookup("stale" if entry.stale else "hit")
            return entry.value
        self.misses += 1
        loading = self._loading.get(key)
        if loading is None:  # one catalog read per key at a time, however many callers wait
            loading = asyncio.ensure_future(self._refresh(key, entry))
            self._loading[key] = loading
            loading.add_done_callback(lambda done: self._finished(key, done))
        value, stale = await asyncio.shield(loading)
        self._on_lookup("stale" if stale else "miss")
        return value

    def _finished(self, key: str, done: asyncio.Future[tuple[T | None, bool]]) -> None:
        if self._loading.get(key) is done:
            del self._loading[key]

    async def _refresh(self, key: str, stale: _Entry[T] | None) -> tuple[T | None, bool]:
        """The value read, or the cached one if the catalog is down; and whether it is that."""
        try:
            value = await self._load(key)
        except CatalogUnavailable as error:
            now = self._clock.now_us()
            if stale is None or now >= stale.usable_until_us:
                raise
            log.warning("catalog unreachable, serving the cached entry for %s: %s", key, error)
            stale.fresh_until_us = min(now + _RETRY_US, stale.usable_until_us)
            stale.stale = True
            return stale.value, True
        if self._loading.get(key) is not asyncio.current_task():
            return value, False  # forgotten meanwhile: the value may predate the change
        self._forget_entry(key)
        table, bound = self._bounds[1] if value is None else self._bounds[0]
        fresh_until = self._clock.now_us() + self._ttl_us
        table[key] = _Entry(value, fresh_until, fresh_until + self._max_stale_us)
        if len(table) > bound:
            table.popitem(last=False)
        return value, False

    def _forget_entry(self, key: str) -> None:
        for table, _ in self._bounds:
            table.pop(key, None)

    def forget(self, key: str) -> None:
        self._forget_entry(key)
        self._loading.pop(key, None)


def _uncounted(result: str) -> None:
    pass


class Directory:
    def __init__(
        self,
        catalog: Catalog,
        clock: Clock,
        ttl: float,
        *,
        max_stale: float,
        on_lookup: Callable[[str], None] = _uncounted,
    ) -> None:
        """`ttl`: how long an entry is used before it is read again; `max_stale`: how much
        longer it may be used while the catalog cannot be read. `on_lookup` is told each
        lookup's result: "hit", "miss" or "stale"."""
        ttl_us = int(ttl * 1_000_000)
        stale_us = int(max_stale * 1_000_000)

        def cache(load: Callable[[str], Awaitable[T | None]]) -> _Cache[T]:
            return _Cache(clock, ttl_us, stale_us, load, on_lookup)

        self._tenants: _Cache[Tenant] = cache(catalog.tenant)
        self._clients: _Cache[ClientRecord] = cache(catalog.client)
        self._users: _Cache[UserRecord] = cache(catalog.user)

        async def load_channel(key: str) -> ChannelDefinition | None:
            tenant, _, name = key.partition(" ")
            return await catalog.channel(tenant, name)

        self._channels: _Cache[ChannelDefinition] = cache(load_channel)

    @property
    def hits(self) -> int:
        return self._tenants.hits + self._clients.hits + self._users.hits + self._channels.hits

    @property
    def misses(self) -> int:
        caches = (self._tenants, self._clients, self._users, self._channels)
        return sum(cache.misses for cache in caches)

    async def channel(self, tenant_id: str, name: str) -> ChannelDefinition | None:
        """The channel's definition (tenant ids and channel names hold no spaces)."""
        return await self._channels.get(f"{tenant_id} {name}")

    async def tenant(self, tenant_id: str) -> Tenant | None:
        return await self._tenants.get(tenant_id)

    async def client(self, client_id: str) -> ClientRecord | None:
        return await self._clients.get(client_id)

    async def user(self, username: str) -> UserRecord | None:
        return await self._users.get(username)

    async def admit(self, principal: Principal) -> Tenant:
        """The caller's tenant, once its client is known to be live and the tenant active.
        Raises TokenInvalid (client revoked or deleted, tenant deleted) or TenantSuspended."""
        client = await self._clients.get(principal.client_id)
        if (
            client is None
            or client.revoked
            or client.tenant != principal.tenant
            or client.generation != principal.client_generation
        ):
            raise TokenInvalid("the client this token was issued to has been revoked")
        tenant = await self._tenants.get(principal.tenant)
        if tenant is None:
            raise TokenInvalid("the tenant this token was issued for no longer exists")
        if tenant.suspended:
            raise TenantSuspended(f"tenant {tenant.tenant_id} is suspended")
        return tenant

    def forget(
        self,
        *,
        tenant: str | None = None,
        client: str | None = None,
        user: str | None = None,
        channel: tuple[str, str] | None = None,
    ) -> None:
        """Drop cached entries this node has just changed, so its own next read is fresh."""
        if tenant is not None:
            self._tenants.forget(tenant)
        if client is not None:
            self._clients.forget(client)
        if user is not None:
            self._users.forget(user)
        if channel is not None:
            self._channels.forget(" ".join(channel))
