"""The node's sorted channel names per tenant: loaded once, then only counted, loaded again when
channels were added (or after a while), and bounded over all tenants."""

from __future__ import annotations

import pytest

from app.bayeux import names as names_module
from app.bayeux.names import ChannelNames
from app.model import ChannelKey
from tests.bayeux._support import CountingEngine
from tests.contract._support import publish_one


class Monotonic:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def publish_to(engine: CountingEngine, tenant: str, *channels: str) -> None:
    for channel in channels:
        await publish_one(engine, ChannelKey(tenant, channel))


async def test_names_are_loaded_once_then_only_counted_until_a_channel_is_added(
    engine: CountingEngine,
) -> None:
    await publish_to(engine, "acme", "/event/B", "/event/A")
    index = ChannelNames(engine)

    first = await index.sorted_names("acme")
    second = await index.sorted_names("acme")
    await publish_to(engine, "acme", "/event/C")
    third = await index.sorted_names("acme")

    assert first == second == ["/event/A", "/event/B"]
    assert third == ["/event/A", "/event/B", "/event/C"]
    assert (engine.name_loads, engine.name_counts) == (2, 3)


async def test_names_are_loaded_again_after_a_while(engine: CountingEngine) -> None:
    await publish_to(engine, "acme", "/event/A")
    clock = Monotonic()
    index = ChannelNames(engine, now=clock)

    await index.sorted_names("acme")
    clock.now += 59
    await index.sorted_names("acme")
    loads_within_a_minute = engine.name_loads
    clock.now += 2
    await index.sorted_names("acme")

    assert loads_within_a_minute == 1
    assert engine.name_loads == 2


async def test_names_kept_are_bounded_over_all_tenants(
    engine: CountingEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(names_module, "_MAX_NAMES", 3)
    await publish_to(engine, "one", "/event/A", "/event/B")
    await publish_to(engine, "two", "/event/A", "/event/B")
    await publish_to(engine, "big", "/event/A", "/event/B", "/event/C", "/event/D")
    index = ChannelNames(engine)

    await index.sorted_names("one")
    await index.sorted_names("two")  # over the bound with "one": "one" goes
    await index.sorted_names("big")  # over the bound alone: never kept
    engine.name_loads = 0
    await index.sorted_names("two")
    await index.sorted_names("one")
    await index.sorted_names("big")

    assert engine.name_loads == 2  # "one" and "big" again; "two" was kept
