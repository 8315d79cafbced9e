"""The validators of stored schemas, built off the event loop and kept within a memory bound
that no tenant can take from another."""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType

from app.schemas import SchemaValidator

__all__ = ["ValidatorCache"]

#: Bytes the kept validators may hold (see `SchemaValidator.weight`).
MAX_BYTES = 64 * 1024 * 1024
#: Bytes each validator counts as at least, which bounds how many are kept (1024).
MIN_WEIGHT = 64 * 1024

_Key = tuple[str, str]  # (tenant, schema id)


@dataclass(frozen=True, slots=True)
class _Build:
    key: _Key
    text: str
    done: asyncio.Future[SchemaValidator]


class ValidatorCache:
    """Builds each stored schema's `SchemaValidator` once and keeps it.

    - One build per schema at a time: concurrent requests for a schema being built wait for
      that build (a waiter that is cancelled cancels nothing of it).
    - Builds run on this cache's own `builders` threads (one by default: a large schema's
      build holds tens of MiB while it runs, which concurrent builds would add up), never the
      default executor (where the token endpoint hashes secrets), and take turns between
      tenants: the next build is of the waiting tenant served least recently (one with none
      under way, first), so a tenant with many schemas to build delays another's by one
      build at a time.
    - Kept validators hold at most `max_bytes`, each counting at least `min_weight`. When a new
      one does not fit, the tenant holding the most bytes gives up its least recently used
      validator first, so a tenant using many large schemas evicts its own validators before
      anyone else's (a tenant holding less than an equal share keeps all of its own).

    An async context manager: leaving it stops the builders and fails the builds not done
    with CancelledError. Unentered, it works all the same, and its threads last as long as
    the process."""

    def __init__(
        self,
        max_bytes: int = MAX_BYTES,
        min_weight: int = MIN_WEIGHT,
        builders: int = 1,
        build: Callable[[str, str], SchemaValidator] = SchemaValidator.build,
    ) -> None:
        self._max_bytes = max_bytes
        self._min_weight = min_weight
        self._builders = builders
        self._build = build  # (schema id, text) -> validator; runs on a builder thread
        self._executor: ThreadPoolExecutor | None = None
        self._kept: dict[str, OrderedDict[str, SchemaValidator]] = {}  # tenant -> LRU first
        self._held: dict[str, int] = {}  # tenant -> bytes
        self._bytes = 0
        self._building: dict[_Key, _Build] = {}
        self._waiting: dict[str, deque[_Build]] = {}  # tenant -> builds not started
        self._served: dict[str, int] = {}  # tenant with builds under way -> its latest turn
        self._turns = itertools.count()
        self._running: set[asyncio.Future[SchemaValidator]] = set()
        self._closed = False

    async def __aenter__(self) -> ValidatorCache:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._closed = True
        self._waiting.clear()
        for build in self._building.values():
            build.done.cancel()
        for running in self._running:
            running.cancel()  # a build already on a thread ends there, unheeded
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def held(self) -> int:
        """Bytes the kept validators count for."""
        return self._bytes

    def kept(self, tenant: str, schema_id: str) -> bool:
        """Whether the validator of `schema_id` is kept (without touching its recency)."""
        return schema_id in self._kept.get(tenant, ())

    async def validator(self, tenant: str, schema_id: str, text: str) -> SchemaValidator:
        """The validator of the tenant's stored schema `schema_id` (`text`, canonical JSON):
        the kept one, else the one being built, else a new build's."""
        kept = self._kept.get(tenant)
        if kept is not None and schema_id in kept:
            kept.move_to_end(schema_id)
            return kept[schema_id]
        if self._closed:
            raise RuntimeError("the validator cache is closed")
        key = (tenant, schema_id)
        build = self._building.get(key)
        if build is None:
            build = _Build(key, text, asyncio.get_running_loop().create_future())
            self._building[key] = build
            self._waiting.setdefault(tenant, deque()).append(build)
            self._start()
        return await asyncio.shield(build.done)

    def _start(self) -> None:
        """Start waiting builds on free builders, of the tenants served least recently."""
        while len(self._running) < self._builders and self._waiting:
            tenant = min(self._waiting, key=lambda waiting: self._served.get(waiting, -1))
            builds = self._waiting[tenant]
            build = builds.popleft()
            if not builds:
                del self._waiting[tenant]
            self._served[tenant] = next(self._turns)
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self._builders, "schema-validators")
            running = asyncio.get_running_loop().run_in_executor(
                self._executor, self._build, build.key[1], build.text
            )
            self._running.add(running)
            running.add_done_callback(functools.partial(self._built, build))

    def _built(self, build: _Build, running: asyncio.Future[SchemaValidator]) -> None:
        self._running.discard(running)
        self._building.pop(build.key, None)
        tenant = build.key[0]
        if all(key[0] != tenant for key in self._building):
            self._served.pop(tenant, None)  # a tenant back with a new build has its turn first
        if running.cancelled():
            build.done.cancel()
        elif (error := running.exception()) is not None:
            if not build.done.done():
                build.done.set_exception(error)
        else:
            validator = running.result()
            if not self._closed:
                self._keep(build.key, validator)
            if not build.done.done():
                build.done.set_result(validator)
        if not self._closed:
            self._start()

    def _weight(self, validator: SchemaValidator) -> int:
        return max(validator.weight, self._min_weight)

    def _keep(self, key: _Key, validator: SchemaValidator) -> None:
        tenant, schema_id = key
        self._kept.setdefault(tenant, OrderedDict())[schema_id] = validator
        weight = self._weight(validator)
        self._held[tenant] = self._held.get(tenant, 0) + weight
        self._bytes += weight
        while self._bytes > self._max_bytes:
            victim = self._victim(keep=key)
            if victim is None:
                return  # the new validator alone is over the bound: it is kept all the same
            self._drop(victim)

    def _victim(self, keep: _Key) -> _Key | None:
        """The least recently used validator of the tenant holding the most, but `keep`."""
        for tenant in sorted(self._held, key=self._held.__getitem__, reverse=True):
            for schema_id in self._kept[tenant]:
                if (tenant, schema_id) != keep:
                    return tenant, schema_id
        return None

    def _drop(self, key: _Key) -> None:
        tenant, schema_id = key
        kept = self._kept[tenant]
        weight = self._weight(kept.pop(schema_id))
        self._bytes -= weight
        self._held[tenant] -= weight
        if not kept:
            del self._kept[tenant], self._held[tenant]
