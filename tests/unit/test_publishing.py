"""PublishService on the embedded memory engine: validation, limits, idempotency keys."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from itertools import count
from typing import Any

import pytest

from app.access import Principal
from app.catalog import ChannelDefinition, Tenant, TenantSettings
from app.directory import Directory
from app.errors import (
    BatchTooLarge,
    CatalogUnavailable,
    ChannelNotPublishable,
    EngineUnavailable,
    EventTooLarge,
    InsufficientScope,
    InvalidBody,
    InvalidChannel,
    InvalidParameter,
    TooManyChannels,
)
from app.model import ChannelKey, EventDraft, Published, Retention, Window
from app.publishing import PublishService, Refused, RolledBack, _RandomUuids
from app.settings import Settings
from storage.memory import MemoryCatalog, MemoryEngine
from tests.contract._support import is_unused
from tests.fakes import FakeClock

CHANNEL = "/event/Order__e"
KEY = ChannelKey("acme", CHANNEL)
NOW = 1_700_000_000_000_000
PUBLISHER = Principal("acme", "client-1", frozenset({"publish"}), expires_at=2e9)
TENANT = Tenant("acme")
GLOBEX = Tenant("globex")

Factory = Callable[..., PublishService]


@pytest.fixture
def engine() -> MemoryEngine:
    return MemoryEngine(FakeClock(NOW), idempotency_ttl=60)


@pytest.fixture
def make_service(engine: MemoryEngine) -> Factory:
    def make(**settings: Any) -> PublishService:
        uuids = count(1)
        return PublishService(engine, Settings(**settings), new_uuid=lambda: f"uuid-{next(uuids)}")

    return make


async def _nothing_stored(engine: MemoryEngine) -> bool:
    return is_unused(await engine.window(KEY))


async def test_single_event_is_stored_with_its_replay_id(
    engine: MemoryEngine, make_service: Factory
) -> None:
    published = await make_service().publish(PUBLISHER, TENANT, CHANNEL, [{"n": 1}])

    assert published == [Published(replay_id=NOW, uuid="uuid-1", created_us=NOW)]
    page = await engine.read(KEY, 0, 10)
    assert [(e.replay_id, e.payload, e.created_by) for e in page.events] == [
        (NOW, b'{"n":1}', "client-1")
    ]


async def test_batch_is_stored_in_order(engine: MemoryEngine, make_service: Factory) -> None:
    published = await make_service().publish(
        PUBLISHER, TENANT, CHANNEL, [{"n": 1}, {"n": 2}, {"n": 3}]
    )

    assert [(p.replay_id, p.uuid) for p in published] == [
        (NOW, "uuid-1"),
        (NOW + 1, "uuid-2"),
        (NOW + 2, "uuid-3"),
    ]
    # The store was born one µs before the clock it was made at: the low-water mark.
    assert await engine.window(KEY) == Window(NOW, NOW + 2, NOW - 1, 3)


@pytest.mark.parametrize(
    "payloads",
    [
        pytest.param([[1, 2]], id="array"),
        pytest.param(["text"], id="string"),
        pytest.param([42], id="number"),
        pytest.param([None], id="null"),
        pytest.param([True], id="boolean"),
        pytest.param([{"ok": 1}, "second-is-bad"], id="one-bad-event-in-batch"),
    ],
)
async def test_non_object_payload_is_invalid_and_nothing_is_stored(
    engine: MemoryEngine, make_service: Factory, payloads: list[object]
) -> None:
    with pytest.raises(InvalidBody, match="must be a JSON object"):
        await make_service().publish(PUBLISHER, TENANT, CHANNEL, payloads)

    assert await _nothing_stored(engine)


async def test_bad_event_in_batch_is_named_by_index(make_service: Factory) -> None:
    with pytest.raises(InvalidBody, match=r"^event 1: an event payload must be a JSON object$"):
        await make_service().publish(PUBLISHER, TENANT, CHANNEL, [{"ok": 1}, [], {"ok": 3}])


async def test_empty_batch_is_invalid(engine: MemoryEngine, make_service: Factory) -> None:
    with pytest.raises(InvalidBody, match="at least one event"):
        await make_service().publish(PUBLISHER, TENANT, CHANNEL, [])

    assert await _nothing_stored(engine)


async def test_batch_over_the_limit_is_too_large(
    engine: MemoryEngine, make_service: Factory
) -> None:
    service = make_service(max_batch_events=2)

    with pytest.raises(BatchTooLarge, match=r"^a batch holds at most 2 events, got 3$"):
        await service.publish(PUBLISHER, TENANT, CHANNEL, [{}, {}, {}])

    assert await _nothing_stored(engine)
    assert len(await service.publish(PUBLISHER, TENANT, CHANNEL, [{}, {}])) == 2


async def test_event_over_the_size_limit_is_too_large_with_sizes(
    engine: MemoryEngine, make_service: Factory
) -> None:
    service = make_service(max_event_size=64)
    payload = {"text": "x" * 54}  # {"text":"..."} is 11 bytes around the text: 65 in all

    with pytest.raises(EventTooLarge) as caught:
        await service.publish(PUBLISHER, TENANT, CHANNEL, [payload])

    assert caught.value.message == "the event is 65 bytes encoded; the limit is 64 bytes"
    assert await _nothing_stored(engine)


async def test_event_of_exactly_the_size_limit_is_accepted(make_service: Factory) -> None:
    published = await make_service(max_event_size=64).publish(
        PUBLISHER, TENANT, CHANNEL, [{"text": "x" * 53}]
    )

    assert published[0].replay_id == NOW


async def test_oversized_event_in_batch_is_named_by_index(make_service: Factory) -> None:
    service = make_service(max_event_size=64)

    with pytest.raises(EventTooLarge) as caught:
        await service.publish(PUBLISHER, TENANT, CHANNEL, [{}, {"text": "x" * 100}])

    assert caught.value.message == "event 1: the event is 111 bytes encoded; the limit is 64 bytes"


@pytest.mark.parametrize(
    "scopes", [frozenset(), frozenset({"subscribe"}), frozenset({"subscribe", "admin"})]
)
async def test_principal_without_publish_scope_is_refused(
    engine: MemoryEngine, make_service: Factory, scopes: frozenset[str]
) -> None:
    principal = Principal("acme", "reader", scopes, expires_at=2e9)

    with pytest.raises(InsufficientScope, match="'publish'"):
        await make_service().publish(principal, TENANT, CHANNEL, [{}])

    assert await _nothing_stored(engine)


@pytest.mark.parametrize("channel", ["/meta/x", "/service/x", "/event", "/topic/x"])
async def test_channel_outside_event_namespace_is_not_publishable(
    make_service: Factory, channel: str
) -> None:
    with pytest.raises(ChannelNotPublishable):
        await make_service().publish(PUBLISHER, TENANT, channel, [{}])


@pytest.mark.parametrize("channel", ["/event/*", "/event/**", "event/X", "/event/a b"])
async def test_pattern_or_malformed_channel_is_invalid(make_service: Factory, channel: str) -> None:
    with pytest.raises(InvalidChannel):
        await make_service().publish(PUBLISHER, TENANT, channel, [{}])


async def test_events_are_stored_under_the_principals_tenant(
    engine: MemoryEngine, make_service: Factory
) -> None:
    other = Principal("globex", "client-9", frozenset({"publish"}), expires_at=2e9)

    await make_service().publish(other, GLOBEX, CHANNEL, [{}])

    assert await _nothing_stored(engine)
    assert (await engine.window(ChannelKey("globex", CHANNEL))).count == 1


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("has space", id="space"),
        pytest.param("x" * 201, id="201-characters"),
        pytest.param("", id="empty"),
        pytest.param("tab\there", id="tab"),
        pytest.param("line\n", id="newline"),
        pytest.param("clé", id="non-ascii"),
        pytest.param("del\x7f", id="delete-character"),
    ],
)
async def test_bad_idempotency_key_is_invalid(
    engine: MemoryEngine, make_service: Factory, key: str
) -> None:
    with pytest.raises(InvalidParameter, match="Idempotency-Key"):
        await make_service().publish(PUBLISHER, TENANT, CHANNEL, [{}], idempotency_key=key)

    assert await _nothing_stored(engine)


@pytest.mark.parametrize("key", ["x" * 200, "!", "~", "order-42:retry#1"])
async def test_printable_idempotency_key_up_to_200_characters_is_accepted(
    make_service: Factory, key: str
) -> None:
    published = await make_service().publish(PUBLISHER, TENANT, CHANNEL, [{}], idempotency_key=key)

    assert published[0].duplicate is False


async def test_republishing_a_single_event_with_its_key_is_a_duplicate(
    engine: MemoryEngine, make_service: Factory
) -> None:
    service = make_service()
    [first] = await service.publish(PUBLISHER, TENANT, CHANNEL, [{"n": 1}], idempotency_key="solo")

    [again] = await service.publish(PUBLISHER, TENANT, CHANNEL, [{"n": 1}], idempotency_key="solo")

    assert again == Published(first.replay_id, first.uuid, first.created_us, duplicate=True)
    assert (await engine.window(KEY)).count == 1


async def test_batch_events_are_keyed_by_index_without_colliding_with_client_keys(
    engine: MemoryEngine, make_service: Factory
) -> None:
    service = make_service()
    first = await service.publish(
        PUBLISHER, TENANT, CHANNEL, [{"n": 0}, {"n": 1}], idempotency_key="k"
    )

    again = await service.publish(
        PUBLISHER, TENANT, CHANNEL, [{"n": 0}, {"n": 1}], idempotency_key="k"
    )
    [other] = await service.publish(PUBLISHER, TENANT, CHANNEL, [{"n": 9}], idempotency_key="k#1")

    assert [p.duplicate for p in first] == [False, False]
    assert [(p.replay_id, p.uuid, p.duplicate) for p in again] == [
        (first[0].replay_id, first[0].uuid, True),
        (first[1].replay_id, first[1].uuid, True),
    ]
    assert other.duplicate is False
    assert other.replay_id > first[1].replay_id
    assert (await engine.window(KEY)).count == 3


async def test_batch_key_does_not_claim_the_bare_key(
    engine: MemoryEngine, make_service: Factory
) -> None:
    service = make_service()
    await service.publish(PUBLISHER, TENANT, CHANNEL, [{"n": 0}, {"n": 1}], idempotency_key="k")

    [single] = await service.publish(PUBLISHER, TENANT, CHANNEL, [{"n": 2}], idempotency_key="k")

    assert single.duplicate is False
    assert (await engine.window(KEY)).count == 3


async def test_without_a_key_every_publish_is_stored(
    engine: MemoryEngine, make_service: Factory
) -> None:
    service = make_service()

    await service.publish(PUBLISHER, TENANT, CHANNEL, [{"n": 1}])
    await service.publish(PUBLISHER, TENANT, CHANNEL, [{"n": 1}])

    assert (await engine.window(KEY)).count == 2


def test_event_uuids_are_distinct_version_4_across_random_pool_refills() -> None:
    new_uuid = _RandomUuids()

    uuids = [new_uuid() for _ in range(1000)]  # four refills of the 256-UUID pool

    assert len(set(uuids)) == 1000
    assert {uuid.UUID(value).version for value in uuids} == {4}
    assert {uuid.UUID(value).variant for value in uuids} == {uuid.RFC_4122}
    assert all(str(uuid.UUID(value)) == value for value in uuids)  # the canonical text


# -- idempotency keys belong to their client (and user) ---------------------------------------


async def test_the_same_key_from_another_client_or_user_is_another_key(
    engine: MemoryEngine, make_service: Factory
) -> None:
    service = make_service()
    producers = [
        PUBLISHER,
        Principal("acme", "client-2", frozenset({"publish"}), expires_at=2e9),
        Principal("acme", "client-1", frozenset({"publish"}), expires_at=2e9, user="ann"),
        Principal("acme", "client-1", frozenset({"publish"}), expires_at=2e9, user="bob smith"),
    ]
    first = [
        (await service.publish(p, TENANT, CHANNEL, [{"n": 1}], idempotency_key="k"))[0]
        for p in producers
    ]
    again = [
        (await service.publish(p, TENANT, CHANNEL, [{"n": 1}], idempotency_key="k"))[0]
        for p in producers
    ]

    assert [p.duplicate for p in first] == [False] * 4
    assert len({p.replay_id for p in first}) == 4
    assert [(p.replay_id, p.duplicate) for p in again] == [(p.replay_id, True) for p in first]
    assert (await engine.window(KEY)).count == 4


# -- records of several channels (composite requests) -----------------------------------------

OTHER = "/event/Other__e"


class _FailingEngine(MemoryEngine):
    """Fails the `fail_at`-th publish (1-based) as an unreachable store would."""

    def __init__(self, fail_at: int) -> None:
        super().__init__(FakeClock(NOW), idempotency_ttl=60)
        self._countdown = fail_at

    async def publish(
        self, key: ChannelKey, drafts: Sequence[EventDraft], retention: Retention
    ) -> list[Published]:
        self._countdown -= 1
        if self._countdown == 0:
            raise EngineUnavailable("the engine is unreachable")
        return await super().publish(key, drafts, retention)


async def test_records_are_stored_per_channel_in_order(
    engine: MemoryEngine, make_service: Factory
) -> None:
    records = [(CHANNEL, {"n": 0}), (OTHER, {"n": 1}), (CHANNEL, {"n": 2})]

    outcomes = await make_service().publish_records(
        PUBLISHER, TENANT, records, all_or_none=True, idempotency_key="request-1"
    )

    assert all(isinstance(outcome, Published) for outcome in outcomes)
    stored = (await engine.read(KEY, 0, 10)).events
    assert [event.payload for event in stored] == [b'{"n":0}', b'{"n":2}']


async def test_one_refused_record_rolls_back_an_all_or_none_request(
    engine: MemoryEngine, make_service: Factory
) -> None:
    records = [(CHANNEL, {"n": 0}), (OTHER, [1]), (CHANNEL, {"n": 2})]

    all_or_none = await make_service().publish_records(
        PUBLISHER, TENANT, records, all_or_none=True, idempotency_key="request-1"
    )
    assert await _nothing_stored(engine)
    each = await make_service().publish_records(PUBLISHER, TENANT, records, all_or_none=False)

    assert isinstance(all_or_none[1], Refused)
    assert isinstance(all_or_none[1].error, InvalidBody)
    assert all_or_none[0] == all_or_none[2] == RolledBack()
    assert isinstance(each[0], Published)
    assert isinstance(each[1], Refused)
    assert isinstance(each[2], Published)
    assert (await engine.window(KEY)).count == 2


async def test_a_store_failure_before_anything_is_stored_refuses_the_whole_request() -> None:
    engine = _FailingEngine(fail_at=1)
    service = PublishService(engine, Settings())
    records = [(CHANNEL, {"n": 0}), (OTHER, {"n": 1})]

    with pytest.raises(EngineUnavailable):
        await service.publish_records(
            PUBLISHER, TENANT, records, all_or_none=True, idempotency_key="request-1"
        )
    assert await _nothing_stored(engine)


async def test_a_store_failure_after_a_channel_was_stored_reports_each_record_truly() -> None:
    """Without `all_or_none`, each record passes or fails on its own."""
    engine = _FailingEngine(fail_at=2)
    service = PublishService(engine, Settings())
    third = "/event/Third__e"
    records = [(CHANNEL, {"n": 0}), (OTHER, {"n": 1}), (third, {"n": 2}), (CHANNEL, {"n": 3})]

    outcomes = await service.publish_records(PUBLISHER, TENANT, records, all_or_none=False)

    assert isinstance(outcomes[0], Published)
    assert isinstance(outcomes[3], Published)
    for refused in outcomes[1:3]:
        assert isinstance(refused, Refused)
        assert isinstance(refused.error, EngineUnavailable)
    assert (await engine.window(KEY)).count == 2
    assert (await engine.window(ChannelKey("acme", third))).count == 0


async def test_a_tenant_created_again_gets_no_channels_known_from_the_deleted_one() -> None:
    """The channel quota trusts the channels this process saw exist, to spare an engine read:
    after the tenant is dropped (on any node) and created again with a smaller quota, names the
    old tenant used must count again."""
    clock = FakeClock(NOW)
    engine = MemoryEngine(clock, idempotency_ttl=60)
    settings = Settings()
    service = PublishService(engine, settings, clock=clock)
    old = Tenant("acme", settings=TenantSettings(max_channels=3))
    names = ["/event/A__e", "/event/B__e", "/event/C__e"]
    for name in names:
        await service.publish(PUBLISHER, old, name, [{}])
    await engine.drop_tenant("acme")  # the tenant is deleted ...
    clock.advance(settings.catalog_cache_ttl)  # ... and its id rests far longer than this
    new = Tenant("acme", settings=TenantSettings(max_channels=1))

    await service.publish(PUBLISHER, new, names[0], [{}])
    with pytest.raises(TooManyChannels):
        await service.publish(PUBLISHER, new, names[1], [{}])

    assert await engine.channel_names("acme") == [names[0]]


async def test_all_or_none_over_several_channels_needs_an_idempotency_key(
    engine: MemoryEngine, make_service: Factory
) -> None:
    records = [(CHANNEL, {"n": 0}), (OTHER, {"n": 1})]

    with pytest.raises(InvalidParameter, match="needs an Idempotency-Key"):
        await make_service().publish_records(PUBLISHER, TENANT, records, all_or_none=True)

    assert await _nothing_stored(engine)


async def test_an_all_or_none_store_failing_midway_is_a_503_that_a_retry_completes_once() -> None:
    engine = _FailingEngine(fail_at=2)
    service = PublishService(engine, Settings())
    third = "/event/Third__e"
    records = [(CHANNEL, {"n": 0}), (OTHER, {"n": 1}), (third, {"n": 2}), (CHANNEL, {"n": 3})]

    with pytest.raises(EngineUnavailable, match="same Idempotency-Key to store the rest"):
        await service.publish_records(
            PUBLISHER, TENANT, records, all_or_none=True, idempotency_key="request-1"
        )
    retried = await service.publish_records(
        PUBLISHER, TENANT, records, all_or_none=True, idempotency_key="request-1"
    )

    assert all(isinstance(outcome, Published) for outcome in retried)
    published = [outcome for outcome in retried if isinstance(outcome, Published)]
    # The channel stored before the failure is not stored again: its records are duplicates.
    assert [p.duplicate for p in published] == [True, False, False, True]
    assert (await engine.window(KEY)).count == 2
    assert (await engine.window(ChannelKey("acme", OTHER))).count == 1
    assert (await engine.window(ChannelKey("acme", third))).count == 1


class _UnreachableCatalog(MemoryCatalog):
    async def channel(self, tenant_id: str, name: str) -> ChannelDefinition | None:
        raise CatalogUnavailable("the catalog database is unreachable")


async def test_a_catalog_outage_while_checking_records_is_a_503_not_a_refused_record(
    engine: MemoryEngine,
) -> None:
    clock = FakeClock(NOW)
    directory = Directory(_UnreachableCatalog(), clock, 5, max_stale=5)
    service = PublishService(engine, Settings(), directory, clock=clock)
    records = [(CHANNEL, {"n": 0}), (CHANNEL, {"n": 1})]

    for all_or_none in (True, False):
        with pytest.raises(CatalogUnavailable):
            await service.publish_records(PUBLISHER, TENANT, records, all_or_none=all_or_none)

    assert await _nothing_stored(engine)
