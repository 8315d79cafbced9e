"""Publishing: validate, encode each payload once, apply the tenant's quotas, store through the
engine. A tenant's settings narrow the server's (event size) or replace them (retention)."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import quote

import orjson

from app.access import Principal
from app.catalog import ChannelDefinition, SchemaVersion, Tenant
from app.channels import publishable_name
from app.clock import Clock, SystemClock
from app.directory import Directory
from app.engine import Engine
from app.errors import (
    BatchTooLarge,
    EngineUnavailable,
    EventTooLarge,
    InvalidBody,
    InvalidParameter,
    RateLimited,
    ReplaybusError,
    SchemaViolation,
    ServiceUnavailable,
    TooManyChannels,
    UnknownChannel,
)
from app.metrics import Metrics
from app.model import ChannelKey, EventDraft, Published, Retention
from app.schema_cache import ValidatorCache
from app.schemas import SchemaValidator, ValidationBudget
from app.settings import Settings
from app.tenancy import ServerLimits, channel_retention

__all__ = ["MAX_IDEMPOTENCY_KEY_LENGTH", "PublishService", "Refused", "RolledBack"]

MAX_IDEMPOTENCY_KEY_LENGTH = 200
_MAX_VIOLATIONS = 100  # listed by one refusal, for all the events of a request
_IDEMPOTENCY_KEY = re.compile(rf"[\x21-\x7e]{{1,{MAX_IDEMPOTENCY_KEY_LENGTH}}}")


@dataclass(frozen=True, slots=True)
class _Prepared:
    """Validated, encoded events of one channel, not yet stored."""

    key: ChannelKey
    drafts: tuple[EventDraft, ...]
    retention: Retention


@dataclass(frozen=True, slots=True)
class Refused:
    """A record of a multi-channel request that was not stored, and why."""

    error: ReplaybusError


@dataclass(frozen=True, slots=True)
class RolledBack:
    """A valid record that was not stored because another record of its all-or-none request
    was refused."""


def _idempotency_scope(principal: Principal) -> str:
    """Whose keys a stored key belongs to: the client, and the user acting through it if any,
    so two producers choosing the same key never get each other's acknowledgements."""
    scope = quote(principal.client_id, safe="")
    return scope + "/" + quote(principal.user, safe="") if principal.user else scope


def _scoped_key(principal: Principal, idempotency_key: str | None, index: int | None) -> str | None:
    """The key an event is remembered under: the request's key, the event's position in it
    (None for a request of one event), and whose it is. A space cannot occur in a key or a
    scope, so neither "<key> @<scope>" nor "<key> <index> @<scope>" can collide with another
    key, nor with the unscoped "<key>" and "<key> <index>" kept before keys were scoped."""
    if idempotency_key is None:
        return None
    where = idempotency_key if index is None else f"{idempotency_key} {index}"
    return f"{where} @{_idempotency_scope(principal)}"


class _RandomUuids:
    """Version 4 UUIDs made 256 at a time from one `os.urandom` read: a system call and a
    `uuid.UUID` per event showed up in publish profiles."""

    def __init__(self) -> None:
        self._ready: list[str] = []

    def __call__(self) -> str:
        if not self._ready:
            self._ready = _uuid4_strings(os.urandom(16 * 256))
        return self._ready.pop()


def _uuid4_strings(random: bytes) -> list[str]:
    """Each 16 bytes of `random` as the text of a version 4 (RFC 4122 variant) UUID."""
    made = []
    raw = bytearray(random)
    for start in range(0, len(raw) - 15, 16):
        raw[start + 6] = raw[start + 6] & 0x0F | 0x40  # version 4
        raw[start + 8] = raw[start + 8] & 0x3F | 0x80  # RFC 4122 variant
        h = raw[start : start + 16].hex()
        made.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return made


class PublishService:
    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        directory: Directory | None = None,
        new_uuid: Callable[[], str] | None = None,
        metrics: Metrics | None = None,
        validators: ValidatorCache | None = None,
        clock: Clock | None = None,
    ) -> None:
        """Without a `directory`, no channel has a definition (so none has a schema).
        `validators` builds and keeps the schemas' validators (the caller owns it; without
        one, the service has its own, open for as long as the process). `clock` times how
        long the channels known to exist are trusted (the catalog cache TTL)."""
        self._engine = engine
        self._validators = validators or ValidatorCache()
        self._metrics = metrics
        self._directory = directory
        self._clock = clock or SystemClock()
        self._known_for = settings.catalog_cache_ttl
        self._server_max_event_size = settings.max_event_size
        self._max_batch = settings.max_batch_events
        self._max_validation_steps = settings.max_validation_steps
        self._retention = ServerLimits.of(settings).retention
        self._new_uuid = new_uuid or _RandomUuids()
        # Channels known to exist, per tenant, so the channel quota costs no engine read on
        # the common path; bounded, and only filled for tenants with a channel quota. Each set
        # is read again after the catalog cache TTL: the tenant may have been dropped (on any
        # node) and created again, which a deleted id's rest lets happen only well after that.
        self._known_channels: dict[str, tuple[set[str], float]] = {}

    def retention(self, tenant: Tenant, definition: ChannelDefinition | None = None) -> Retention:
        """The channel definition's retention, within the tenant's, else the server's."""
        return channel_retention(tenant.settings, definition, self._retention)

    async def definition(self, tenant: Tenant, name: str) -> ChannelDefinition | None:
        """The channel's definition; UnknownChannel when the tenant requires one and there
        is none."""
        definition = None
        if self._directory is not None:
            definition = await self._directory.channel(tenant.tenant_id, name)
        if definition is None and tenant.settings.require_defined_channels:
            raise UnknownChannel(
                f"channel {name} is not defined, and tenant {tenant.tenant_id} only allows "
                "defined channels: define it first (replaybus channels define)"
            )
        return definition

    def validation_budget(self) -> ValidationBudget:
        """A new budget for the schema validation of one request."""
        return ValidationBudget(self._max_validation_steps)

    @staticmethod
    def _check_schema(
        schema: SchemaVersion,
        validator: SchemaValidator,
        payloads: Sequence[object],
        budget: ValidationBudget,
        *,
        batch: bool,
    ) -> None:
        """SchemaViolation listing the violations of `payloads` (at most 100 in all),
        ValidationTooCostly when `budget` runs out, UnusableSchema when the stored schema
        cannot be applied."""
        found: list[dict[str, object]] = []
        for index, payload in enumerate(payloads):
            for violation in validator.violations(payload, budget):
                entry: dict[str, object] = {"path": violation.path, "message": violation.message}
                found.append({"event": index, **entry} if batch else entry)
            if len(found) >= _MAX_VIOLATIONS:
                del found[_MAX_VIOLATIONS:]
                break
        if found:
            listed = "; ".join(f"{v['path']}: {v['message']}" for v in found[:5])
            more = f" (and {len(found) - 5} more)" if len(found) > 5 else ""
            raise SchemaViolation(
                f"the payload does not match schema {schema.schema_id} (version "
                f"{schema.version}) of {schema.channel}: {listed}{more}",
                found,
            )

    def _max_event_size(self, tenant: Tenant) -> int:
        own = tenant.settings.max_event_size
        return self._server_max_event_size if own is None else min(own, self._server_max_event_size)

    async def take_allowance(self, tenant: Tenant, count: int) -> None:
        """Charge `count` events to the tenant's publish rate; RateLimited (nothing stored)
        when it has run out, saying when to retry."""
        rate = tenant.settings.publish_rate
        if rate is None:
            return
        burst = tenant.settings.publish_burst or max(1, math.ceil(rate))
        if count > burst:
            raise BatchTooLarge(
                f"a batch of {count} events exceeds this tenant's publish burst of {burst}"
            )
        wait = await self._engine.rate_take(tenant.tenant_id, count, rate, burst)
        if wait > 0:
            raise RateLimited(
                f"tenant {tenant.tenant_id} may publish {rate:g} events per second "
                f"(burst {burst}); retry in {wait:.2f} s",
                retry_after=wait,
            )

    async def _over_channel_quota(self, tenant: Tenant, names: Sequence[str]) -> list[str]:
        """Those of `names` (in order, once each) that would take the tenant beyond its
        channel quota: new channels past the room left. A used channel never is."""
        limit = tenant.settings.max_channels
        wanted = list(dict.fromkeys(names))
        known = self._known(tenant.tenant_id)
        if limit is None or (known is not None and known.issuperset(wanted)):
            return []
        used = set(await self._engine.channel_names(tenant.tenant_id))
        if len(self._known_channels) > 10_000:
            self._known_channels.clear()
        self._known_channels[tenant.tenant_id] = (used, self._clock.monotonic() + self._known_for)
        new = [name for name in wanted if name not in used]
        return new[max(0, limit - len(used)) :]

    def _known(self, tenant_id: str) -> set[str] | None:
        """The tenant's channels known to exist, if read within the TTL."""
        known = self._known_channels.get(tenant_id)
        if known is None or known[1] <= self._clock.monotonic():
            return None
        return known[0]

    @staticmethod
    def _too_many_channels(tenant: Tenant, names: Sequence[str]) -> TooManyChannels:
        return TooManyChannels(
            f"tenant {tenant.tenant_id} may use at most {tenant.settings.max_channels} channels; "
            f"{', '.join(names)} would be more"
        )

    async def publish(
        self,
        principal: Principal,
        tenant: Tenant,
        channel: str,
        payloads: Sequence[object],
        idempotency_key: str | None = None,
        *,
        transport: str = "rest",
    ) -> list[Published]:
        """Store `payloads` (decoded JSON objects) on `channel` atomically, in order.

        With an `idempotency_key`, a retried request of the same client (and user) returns the
        original acknowledgements and stores nothing new; a batch's events are keyed by the key
        and their index. Another client's use of the same key is another key.
        """
        prepared = await self._prepare(principal, tenant, channel, payloads, idempotency_key)
        over = await self._over_channel_quota(tenant, [prepared.key.name])
        if over:
            raise self._too_many_channels(tenant, over)
        await self.take_allowance(tenant, len(prepared.drafts))
        return await self._store(prepared, tenant, transport)

    async def publish_records(
        self,
        principal: Principal,
        tenant: Tenant,
        records: Sequence[tuple[str, object]],
        *,
        all_or_none: bool,
        idempotency_key: str | None = None,
        transport: str = "rest",
    ) -> list[Published | Refused | RolledBack]:
        """Store records (channel, payload) of possibly several channels: one atomic engine
        publish per channel, each channel's records in request order. One outcome per record.

        Everything is checked before anything is stored: each record (scope, shape, size,
        schema), then the channel quota, then the publish rate of all that remain (RateLimited
        or BatchTooLarge is raised: nothing stored). A ServiceUnavailable while checking (the
        catalog out of reach) is raised too: the request can be sent again, while a refused
        record could not. With `all_or_none`, one refused record rolls back every other.

        With an `idempotency_key`, each record is remembered under the key and its position
        (as a batch's events are), so the same request sent again stores nothing twice. A
        store failure before anything was stored is raised. After a channel was stored (only
        possible with several channels): with `all_or_none` it is raised as EngineUnavailable,
        and the same request sent again with the same key stores the rest; without, it refuses
        that channel's records and those not yet stored, while the stored ones are reported as
        stored. That is why `all_or_none` across several channels needs a key (InvalidParameter
        without one): it is the only way to make such a request all or nothing.
        """
        self._check_idempotency_key(idempotency_key)
        if all_or_none and idempotency_key is None and len({c for c, _ in records}) > 1:
            raise InvalidParameter(
                "allOrNone across several event types needs an Idempotency-Key header: "
                "their events are stored one type at a time, and if the store fails midway "
                "only the same request sent again with the same key can complete it without "
                "storing anything twice"
            )
        budget = self.validation_budget()  # one for the whole request
        outcomes: list[Published | Refused | RolledBack | None] = [None] * len(records)
        groups: dict[ChannelKey, list[tuple[int, EventDraft]]] = {}
        retention: dict[ChannelKey, Retention] = {}
        for index, (channel, payload) in enumerate(records):
            try:
                prepared = await self._prepare(
                    principal, tenant, channel, [payload], idempotency_key, budget, record=index
                )
            except ServiceUnavailable:
                raise
            except ReplaybusError as error:
                outcomes[index] = Refused(error)
                continue
            groups.setdefault(prepared.key, []).extend((index, d) for d in prepared.drafts)
            retention[prepared.key] = prepared.retention
        over = await self._over_channel_quota(tenant, [key.name for key in groups])
        for key in [key for key in groups if key.name in over]:
            refused = Refused(self._too_many_channels(tenant, [key.name]))
            for index, _ in groups.pop(key):
                outcomes[index] = refused
        if all_or_none and any(outcome is not None for outcome in outcomes):
            return [RolledBack() if outcome is None else outcome for outcome in outcomes]
        if groups:
            await self.take_allowance(tenant, sum(map(len, groups.values())))
        failed: Refused | None = None
        for key, members in groups.items():
            if failed is None:
                drafts = tuple(draft for _, draft in members)
                try:
                    acks = await self._store(
                        _Prepared(key, drafts, retention[key]), tenant, transport
                    )
                except ReplaybusError as error:
                    if all(not isinstance(outcome, Published) for outcome in outcomes):
                        raise
                    if all_or_none:
                        raise EngineUnavailable(
                            f"{error.message}; some of this request's records are stored and "
                            "others are not: send the same request again with the same "
                            "Idempotency-Key to store the rest (nothing is stored twice)"
                        ) from None
                    failed = Refused(error)
                else:
                    for (index, _), ack in zip(members, acks, strict=True):
                        outcomes[index] = ack
                    continue
            for index, _ in members:
                outcomes[index] = failed
        return [outcome for outcome in outcomes if outcome is not None]

    async def _prepare(
        self,
        principal: Principal,
        tenant: Tenant,
        channel: str,
        payloads: Sequence[object],
        idempotency_key: str | None,
        budget: ValidationBudget | None = None,
        *,
        record: int | None = None,
    ) -> _Prepared:
        """`record`: the position of the one payload in a multi-channel request, which its
        idempotency key carries (as a batch's events carry theirs)."""
        name = publishable_name(channel)
        principal.require("publish", name)
        if not payloads:
            raise InvalidBody("a batch must hold at least one event")
        if len(payloads) > self._max_batch:
            raise BatchTooLarge(
                f"a batch holds at most {self._max_batch} events, got {len(payloads)}"
            )
        self._check_idempotency_key(idempotency_key)
        batch = len(payloads) > 1
        limit = self._max_event_size(tenant)
        drafts = [
            self._draft(
                principal,
                payload,
                index,
                _scoped_key(principal, idempotency_key, index if batch else record),
                limit,
                batch=batch,
            )
            for index, payload in enumerate(payloads)
        ]
        definition = await self.definition(tenant, name)
        schema = definition.schema if definition is not None else None
        if schema is not None:
            validator = await self._validators.validator(
                schema.tenant, schema.schema_id, schema.document
            )
            budget = budget or self.validation_budget()
            self._check_schema(schema, validator, payloads, budget, batch=batch)
            drafts = [dataclasses.replace(draft, schema=schema.schema_id) for draft in drafts]
        key = ChannelKey(principal.tenant, name)
        return _Prepared(key, tuple(drafts), self.retention(tenant, definition))

    async def _store(self, prepared: _Prepared, tenant: Tenant, transport: str) -> list[Published]:
        """Store prepared events of one channel as one atomic engine publish (the caller has
        checked the channel quota and taken the publish allowance)."""
        started = time.perf_counter()
        published = await self._engine.publish(prepared.key, prepared.drafts, prepared.retention)
        if self._metrics is not None:
            self._metrics.record_publish(
                prepared.key, transport, published, time.perf_counter() - started
            )
        known = self._known(tenant.tenant_id)
        if known is not None:
            known.add(prepared.key.name)
        return published

    @staticmethod
    def _check_idempotency_key(idempotency_key: str | None) -> None:
        if idempotency_key is not None and not _IDEMPOTENCY_KEY.fullmatch(idempotency_key):
            raise InvalidParameter(
                f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII characters"
            )

    def _draft(
        self,
        principal: Principal,
        payload: object,
        index: int,
        key: str | None,
        max_size: int,
        *,
        batch: bool,
    ) -> EventDraft:
        where = f"event {index}: " if batch else ""
        if not isinstance(payload, dict):
            raise InvalidBody(f"{where}an event payload must be a JSON object")
        encoded = orjson.dumps(payload)
        if len(encoded) > max_size:
            raise EventTooLarge(
                f"{where}the event is {len(encoded)} bytes encoded; the limit is {max_size} bytes"
            )
        return EventDraft(
            uuid=self._new_uuid(),
            payload=encoded,
            created_by=principal.subject,
            idempotency_key=key,
        )
