"""Tenant settings as JSON: every field's validation, defaults, the stored form, tenant ids."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from app.catalog import ChannelDefinition, TenantSettings
from app.errors import InvalidBody
from app.model import Retention
from app.tenancy import (
    TENANT_ID,
    ServerLimits,
    channel_retention,
    check_within_server,
    settings_from_json,
    settings_to_json,
    updated_settings,
)

#: JSON name -> attribute of `TenantSettings`, for every setting.
ATTRIBUTES = {
    "retentionMaxAge": "retention_max_age",
    "retentionMaxCount": "retention_max_count",
    "publishRate": "publish_rate",
    "publishBurst": "publish_burst",
    "maxSubscribers": "max_subscribers",
    "maxStreamsPerClient": "max_streams_per_client",
    "maxEventSize": "max_event_size",
    "maxChannels": "max_channels",
    "corsOrigins": "cors_origins",
    "requireDefinedChannels": "require_defined_channels",
}

#: A document setting every field to a valid, non-default value.
FULL_DOCUMENT: dict[str, Any] = {
    "retentionMaxAge": 3600.5,
    "retentionMaxCount": 250,
    "publishRate": 12.5,
    "publishBurst": 40,
    "maxSubscribers": 7,
    "maxStreamsPerClient": 3,
    "maxEventSize": 2048,
    "maxChannels": 33,
    "corsOrigins": ["https://app.example.com", "http://localhost:8080"],
    "requireDefinedChannels": True,
}

FULL_SETTINGS = TenantSettings(
    retention_max_age=3600.5,
    retention_max_count=250,
    publish_rate=12.5,
    publish_burst=40,
    max_subscribers=7,
    max_streams_per_client=3,
    max_event_size=2048,
    max_channels=33,
    cors_origins=("https://app.example.com", "http://localhost:8080"),
    require_defined_channels=True,
)

#: (JSON name, valid value, the attribute's value after it) including each range's bounds.
VALID = [
    ("retentionMaxAge", 1, 1),
    ("retentionMaxAge", 1.5, 1.5),
    ("retentionMaxAge", 365 * 86400, 365 * 86400),
    ("retentionMaxCount", 1, 1),
    ("retentionMaxCount", 10_000_000, 10_000_000),
    ("publishRate", 0.001, 0.001),
    ("publishRate", 5, 5),
    ("publishRate", 1_000_000, 1_000_000),
    ("publishBurst", 1, 1),
    ("publishBurst", 1_000_000, 1_000_000),
    ("maxSubscribers", 0, 0),
    ("maxSubscribers", 10_000_000, 10_000_000),
    ("maxStreamsPerClient", 1, 1),
    ("maxStreamsPerClient", 1_000_000, 1_000_000),
    ("maxEventSize", 1, 1),
    ("maxEventSize", 64 * 1024 * 1024, 64 * 1024 * 1024),
    ("maxChannels", 1, 1),
    ("maxChannels", 10_000_000, 10_000_000),
    ("corsOrigins", [], ()),
    ("corsOrigins", ["*"], ("*",)),
    ("corsOrigins", ["http://localhost:8080"], ("http://localhost:8080",)),
    ("corsOrigins", ["https://app.example.com"], ("https://app.example.com",)),
    (
        "corsOrigins",
        ["https://app.example.com", "http://localhost:8080", "*"],
        ("https://app.example.com", "http://localhost:8080", "*"),
    ),
    ("requireDefinedChannels", True, True),
    ("requireDefinedChannels", False, False),
]

#: (JSON name, invalid value): wrong type, bool for a number, out of range, bad origins.
INVALID = [
    ("retentionMaxAge", "3600"),
    ("retentionMaxAge", True),
    ("retentionMaxAge", 0),
    ("retentionMaxAge", 0.999),
    ("retentionMaxAge", 365 * 86400 + 1),
    ("retentionMaxAge", -5),
    ("retentionMaxAge", float("nan")),
    ("retentionMaxAge", float("inf")),
    ("retentionMaxAge", [3600]),
    ("retentionMaxCount", "10"),
    ("retentionMaxCount", True),
    ("retentionMaxCount", 1.5),
    ("retentionMaxCount", 2.0),
    ("retentionMaxCount", 0),
    ("retentionMaxCount", 10_000_001),
    ("publishRate", "1"),
    ("publishRate", False),
    ("publishRate", 0),
    ("publishRate", 0.0009),
    ("publishRate", 1_000_000.5),
    ("publishRate", -1),
    ("publishBurst", "5"),
    ("publishBurst", True),
    ("publishBurst", 2.5),
    ("publishBurst", 0),
    ("publishBurst", 1_000_001),
    ("maxSubscribers", "0"),
    ("maxSubscribers", False),
    ("maxSubscribers", 0.5),
    ("maxSubscribers", -1),
    ("maxSubscribers", 10_000_001),
    ("maxStreamsPerClient", 0),
    ("maxStreamsPerClient", 1_000_001),
    ("maxStreamsPerClient", "2"),
    ("maxEventSize", "1024"),
    ("maxEventSize", True),
    ("maxEventSize", 1024.0),
    ("maxEventSize", 0),
    ("maxEventSize", 64 * 1024 * 1024 + 1),
    ("maxChannels", "3"),
    ("maxChannels", True),
    ("maxChannels", 3.5),
    ("maxChannels", 0),
    ("maxChannels", 10_000_001),
    ("maxChannels", {"n": 3}),
    ("corsOrigins", "https://app.example.com"),
    ("corsOrigins", True),
    ("corsOrigins", {"origin": "https://app.example.com"}),
    ("corsOrigins", [1]),
    ("corsOrigins", ["https://app.example.com", None]),
    ("corsOrigins", ["ftp://x"]),
    ("corsOrigins", ["https://a.com/path"]),
    ("corsOrigins", ["https://app.example.com", "https://a.com/path"]),
    ("corsOrigins", ["https://app.example.com/"]),
    ("corsOrigins", ["app.example.com"]),
    ("corsOrigins", ["https://"]),
    ("corsOrigins", ["https://app.example.com:123456"]),
    ("corsOrigins", [""]),
    ("requireDefinedChannels", "true"),
    ("requireDefinedChannels", 1),
    ("requireDefinedChannels", 0),
    ("requireDefinedChannels", [True]),
]


def test_the_tables_cover_every_setting() -> None:
    fields = {field.name for field in dataclasses.fields(TenantSettings)}

    assert set(ATTRIBUTES.values()) == fields
    assert set(FULL_DOCUMENT) == set(ATTRIBUTES)
    assert {name for name, _, _ in VALID} == set(ATTRIBUTES)
    assert {name for name, _ in INVALID} == set(ATTRIBUTES)
    defaults = TenantSettings()
    assert [
        name for name in fields if getattr(FULL_SETTINGS, name) == getattr(defaults, name)
    ] == []


@pytest.mark.parametrize(("name", "value", "expected"), VALID)
def test_a_valid_value_is_accepted(name: str, value: Any, expected: Any) -> None:
    settings = settings_from_json({name: value})

    attribute = ATTRIBUTES[name]
    assert getattr(settings, attribute) == expected
    assert type(getattr(settings, attribute)) is type(expected)
    assert dataclasses.replace(settings, **{attribute: getattr(TenantSettings(), attribute)}) == (
        TenantSettings()
    )


@pytest.mark.parametrize(("name", "value"), INVALID)
def test_an_invalid_value_is_rejected_naming_the_field(name: str, value: Any) -> None:
    with pytest.raises(InvalidBody) as raised:
        settings_from_json({name: value})

    assert f"settings.{name}" in raised.value.message
    assert raised.value.message == str(raised.value)


@pytest.mark.parametrize(("name", "value"), INVALID)
def test_an_invalid_value_among_valid_ones_is_rejected(name: str, value: Any) -> None:
    changes = {**FULL_DOCUMENT, name: value}

    with pytest.raises(InvalidBody, match=rf"settings\.{name}\b"):
        updated_settings(FULL_SETTINGS, changes)


@pytest.mark.parametrize(
    "changes",
    [
        {"retentionMaxAgeSeconds": 5},
        {"retention_max_age": 5},
        {"publishRate": 5, "colour": "blue"},
        {"": 1},
    ],
)
def test_an_unknown_setting_is_rejected_listing_the_known_ones(changes: dict[str, Any]) -> None:
    with pytest.raises(InvalidBody) as raised:
        updated_settings(TenantSettings(), changes)

    message = raised.value.message
    unknown = next(name for name in changes if name not in ATTRIBUTES)
    assert "unknown" in message
    assert "known:" in message
    named, known = message.split("known:", 1)
    assert unknown in named
    for name in ATTRIBUTES:
        assert name in known


@pytest.mark.parametrize(
    "document", [None, [], [{"publishRate": 5}], "publishRate", 5, True, ("publishRate",)]
)
def test_a_document_that_is_not_an_object_is_rejected(document: Any) -> None:
    with pytest.raises(InvalidBody, match="object"):
        settings_from_json(document)
    with pytest.raises(InvalidBody, match="object"):
        updated_settings(FULL_SETTINGS, document)


@pytest.mark.parametrize("name", list(ATTRIBUTES))
def test_null_restores_the_default_and_keeps_the_rest(name: str) -> None:
    attribute = ATTRIBUTES[name]

    updated = updated_settings(FULL_SETTINGS, {name: None})

    assert getattr(updated, attribute) == getattr(TenantSettings(), attribute)
    assert getattr(FULL_SETTINGS, attribute) != getattr(TenantSettings(), attribute)
    assert updated == dataclasses.replace(
        FULL_SETTINGS, **{attribute: getattr(TenantSettings(), attribute)}
    )
    assert name not in settings_to_json(updated)


def test_null_everywhere_restores_every_default() -> None:
    assert updated_settings(FULL_SETTINGS, dict.fromkeys(ATTRIBUTES)) == TenantSettings()


def test_an_empty_change_keeps_the_current_settings() -> None:
    assert updated_settings(FULL_SETTINGS, {}) == FULL_SETTINGS


def test_a_change_replaces_only_the_named_settings() -> None:
    updated = updated_settings(
        FULL_SETTINGS, {"publishRate": 99.5, "corsOrigins": ["*"], "requireDefinedChannels": False}
    )

    assert updated == dataclasses.replace(
        FULL_SETTINGS, publish_rate=99.5, cors_origins=("*",), require_defined_channels=False
    )


def test_a_rejected_change_leaves_the_current_settings_alone() -> None:
    current = dataclasses.replace(FULL_SETTINGS)

    with pytest.raises(InvalidBody):
        updated_settings(current, {"publishRate": 1.0, "maxChannels": 0})

    assert current == FULL_SETTINGS


def test_a_full_document_is_read_field_by_field() -> None:
    assert settings_from_json(FULL_DOCUMENT) == FULL_SETTINGS


def test_a_full_document_round_trips() -> None:
    document = settings_to_json(settings_from_json(FULL_DOCUMENT))

    assert document == FULL_DOCUMENT
    assert isinstance(document["corsOrigins"], list)


def test_full_settings_round_trip() -> None:
    assert settings_from_json(settings_to_json(FULL_SETTINGS)) == FULL_SETTINGS


def test_the_defaults_are_an_empty_document() -> None:
    assert settings_to_json(TenantSettings()) == {}
    assert settings_from_json({}) == TenantSettings()


@pytest.mark.parametrize(
    ("settings", "document"),
    [
        (TenantSettings(publish_rate=2.5), {"publishRate": 2.5}),
        (TenantSettings(max_subscribers=0), {"maxSubscribers": 0}),
        (TenantSettings(cors_origins=("*",)), {"corsOrigins": ["*"]}),
        (TenantSettings(require_defined_channels=True), {"requireDefinedChannels": True}),
        (TenantSettings(require_defined_channels=False), {}),
        (TenantSettings(cors_origins=()), {}),
    ],
)
def test_only_settings_that_differ_from_the_default_are_written(
    settings: TenantSettings, document: dict[str, Any]
) -> None:
    assert settings_to_json(settings) == document


def test_explicit_defaults_are_not_written_back() -> None:
    read = settings_from_json({"requireDefinedChannels": False, "corsOrigins": []})

    assert read == TenantSettings()
    assert settings_to_json(read) == {}


@pytest.mark.parametrize(
    "tenant_id",
    ["acme", "Acme", "a-1_b", "-x", "_x", "a", "0", "9lives", "a" * 64, "x" + "-_" * 31],
)
def test_tenant_id_accepts(tenant_id: str) -> None:
    assert TENANT_ID.fullmatch(tenant_id)


@pytest.mark.parametrize(
    "tenant_id",
    [
        "",
        "a" * 65,
        "a" * 100,
        "a b",
        "a.b",
        "a/b",
        "é",
        "acme\n",
    ],
)
def test_tenant_id_rejects(tenant_id: str) -> None:
    assert TENANT_ID.fullmatch(tenant_id) is None


# -- the server's bounds -----------------------------------------------------------------------

LIMITS = ServerLimits(
    retention=Retention(max_age_us=7_200_000_000, max_count=500),
    max_event_size=4096,
    cors_origins=("https://a.example",),
)


def test_a_setting_saved_above_a_later_lowered_maximum_does_not_block_other_changes() -> None:
    saved = TenantSettings(max_event_size=8192, cors_origins=("https://gone.example",))

    check_within_server(saved, dataclasses.replace(saved, publish_rate=5.0), LIMITS)

    with pytest.raises(InvalidBody, match="maxEventSize 8,193"):
        check_within_server(saved, dataclasses.replace(saved, max_event_size=8193), LIMITS)
    with pytest.raises(InvalidBody, match=r"corsOrigins: https://b\.example not among"):
        check_within_server(
            saved, dataclasses.replace(saved, cors_origins=("https://b.example",)), LIMITS
        )


@pytest.mark.parametrize(
    ("origins", "allowed"),
    [((), ("https://anything.example", "*")), (("*",), ("https://anything.example",))],
)
def test_without_an_origin_list_any_tenant_origin_is_accepted(
    origins: tuple[str, ...], allowed: tuple[str, ...]
) -> None:
    limits = dataclasses.replace(LIMITS, cors_origins=origins)
    check_within_server(TenantSettings(), TenantSettings(cors_origins=allowed), limits)


@pytest.mark.parametrize(
    ("tenant", "definition", "expected"),
    [
        (TenantSettings(), None, (7_200_000_000, 500)),
        (TenantSettings(retention_max_age=60.0), None, (60_000_000, 500)),
        (TenantSettings(retention_max_count=9), (30.0, None), (30_000_000, 9)),
        (TenantSettings(), (None, 7), (7_200_000_000, 7)),
        # Saved before the tenant's (or the server's) retention was lowered: clamped.
        (TenantSettings(retention_max_age=60.0), (3600.0, 1000), (60_000_000, 500)),
        (TenantSettings(), (86_400.0, None), (7_200_000_000, 500)),
    ],
)
def test_a_channels_retention_is_its_definitions_within_its_tenants(
    tenant: TenantSettings,
    definition: tuple[float | None, int | None] | None,
    expected: tuple[int, int],
) -> None:
    defined = None
    if definition is not None:
        age, count = definition
        defined = ChannelDefinition(
            "acme", "/event/X__e", retention_max_age=age, retention_max_count=count
        )
    retention = channel_retention(tenant, defined, LIMITS.retention)
    assert (retention.max_age_us, retention.max_count) == expected
