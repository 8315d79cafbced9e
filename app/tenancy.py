"""Tenant settings as JSON (the admin API's and the catalog's form), validated field by field,
and how they meet the server's: maxima they may not exceed, retention they fall back to."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from app.catalog import ChannelDefinition, TenantSettings
from app.errors import InvalidBody
from app.model import Retention
from app.settings import Settings

__all__ = [
    "TENANT_ID",
    "ServerLimits",
    "channel_retention",
    "check_setting",
    "check_within_server",
    "describe_settings",
    "settings_from_json",
    "settings_to_json",
    "tenant_retention",
    "updated_settings",
]

#: Tenant ids: what may appear in token subjects, keys and URLs without escaping.
TENANT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ORIGIN = re.compile(r"\*|https?://[a-z0-9.-]+(:[0-9]{1,5})?")


def _number(low: float, high: float, *, integer: bool) -> Callable[[str, Any], Any]:
    def check(name: str, value: Any) -> Any:
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
            kind = "an integer" if integer else "a number"
            raise InvalidBody(f"{name} must be {kind} from {low:,} to {high:,}, got {value!r}")
        return value

    return check


def _origins(name: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(o, str) for o in value):
        raise InvalidBody(f"{name} must be a list of origins such as 'https://app.example.com'")
    for origin in value:
        if not _ORIGIN.fullmatch(origin):
            raise InvalidBody(f"{name}: {origin!r} is not an origin (scheme://host[:port] or *)")
    return tuple(value)


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidBody(f"{name} must be true or false, got {value!r}")
    return value


#: JSON name -> (field, check). Absent or null means "the server-wide default".
_FIELDS: dict[str, tuple[str, Callable[[str, Any], Any]]] = {
    "retentionMaxAge": ("retention_max_age", _number(1, 31_536_000, integer=False)),
    "retentionMaxCount": ("retention_max_count", _number(1, 10_000_000, integer=True)),
    "publishRate": ("publish_rate", _number(0.001, 1_000_000, integer=False)),
    "publishBurst": ("publish_burst", _number(1, 1_000_000, integer=True)),
    "maxSubscribers": ("max_subscribers", _number(0, 10_000_000, integer=True)),
    "maxStreamsPerClient": ("max_streams_per_client", _number(1, 1_000_000, integer=True)),
    "maxEventSize": ("max_event_size", _number(1, 64 * 1024 * 1024, integer=True)),
    "maxChannels": ("max_channels", _number(1, 10_000_000, integer=True)),
    "corsOrigins": ("cors_origins", _origins),
    "requireDefinedChannels": ("require_defined_channels", _flag),
}
_DESCRIPTIONS = {
    "retentionMaxAge": ("number", "Retention by age, seconds."),
    "retentionMaxCount": ("integer", "Retention by count, per channel."),
    "publishRate": ("number", "Publishes per second, sustained (429 with Retry-After above)."),
    "publishBurst": ("integer", "Publishes allowed at once above the rate."),
    "maxSubscribers": ("integer", "Concurrent SSE streams and Bayeux sessions."),
    "maxStreamsPerClient": ("integer", "SSE streams one client may hold on one worker."),
    "maxEventSize": ("integer", "Largest event payload in bytes (413 above)."),
    "maxChannels": ("integer", "Distinct channels with events."),
    "corsOrigins": ("array", "Browser origins allowed for this tenant."),
    "requireDefinedChannels": ("boolean", "Only defined channels may be used."),
}


def describe_settings() -> list[tuple[str, str, str]]:
    """(JSON name, JSON type, description) of every tenant setting."""
    return [(name, *_DESCRIPTIONS[name]) for name in _FIELDS]


_DEFAULTS = TenantSettings()


def check_setting(name: str, value: Any) -> Any:
    """`value` checked as the tenant setting `name` would be (None passes)."""
    return None if value is None else _FIELDS[name][1](name, value)


def updated_settings(current: TenantSettings, changes: Any) -> TenantSettings:
    """`current` with the JSON object `changes` applied; a null value restores the default."""
    if not isinstance(changes, Mapping):
        raise InvalidBody("tenant settings must be a JSON object")
    unknown = sorted(set(changes) - set(_FIELDS))
    if unknown:
        raise InvalidBody(
            f"unknown tenant settings {', '.join(unknown)}; known: {', '.join(_FIELDS)}"
        )
    values: dict[str, Any] = {}
    for name, value in changes.items():
        attribute, check = _FIELDS[name]
        values[attribute] = (
            getattr(_DEFAULTS, attribute) if value is None else check(f"settings.{name}", value)
        )
    return dataclasses.replace(current, **values)


def settings_from_json(document: Any) -> TenantSettings:
    return updated_settings(_DEFAULTS, document)


def settings_to_json(settings: TenantSettings) -> dict[str, Any]:
    """Every setting that differs from the default (the stored and the shown form)."""
    document: dict[str, Any] = {}
    for name, (attribute, _) in _FIELDS.items():
        value = getattr(settings, attribute)
        if value != getattr(_DEFAULTS, attribute):
            document[name] = list(value) if isinstance(value, tuple) else value
    return document


# -- the server's bounds -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """What the server's settings mean for tenants: the retention of a tenant without its own,
    and the maxima and allow-lists a tenant's own settings must stay within."""

    retention: Retention
    max_event_size: int
    cors_origins: tuple[str, ...] = ()  # empty: CORS off; ("*",): any origin

    @classmethod
    def of(cls, settings: Settings) -> ServerLimits:
        return cls(
            retention=Retention(
                max_age_us=int(settings.retention_max_age * 1_000_000),
                max_count=settings.retention_max_count,
            ),
            max_event_size=settings.max_event_size,
            cors_origins=tuple(settings.cors_origins),
        )


def check_within_server(
    current: TenantSettings, updated: TenantSettings, limits: ServerLimits
) -> None:
    """InvalidBody naming the server setting that a changed tenant setting would exceed.

    `maxEventSize` is bounded by REPLAYBUS_MAX_EVENT_SIZE, and `corsOrigins` by an explicit
    REPLAYBUS_CORS_ALLOWED_ORIGINS list. The other settings have no server-wide maximum: the
    server's retention is a default a tenant's replaces, and rates, subscribers and channels
    are tenant quotas only. Settings left unchanged are not checked again: one saved before
    the operator lowered a server maximum is clamped where it is used instead."""
    size = updated.max_event_size
    if size != current.max_event_size and size is not None and size > limits.max_event_size:
        raise InvalidBody(
            f"settings.maxEventSize {size:,} exceeds this server's largest event, "
            f"REPLAYBUS_MAX_EVENT_SIZE ({limits.max_event_size:,} bytes)"
        )
    allowed = limits.cors_origins
    if updated.cors_origins != current.cors_origins and allowed and "*" not in allowed:
        outside = [o for o in updated.cors_origins if o != "*" and o not in allowed]
        if outside:
            raise InvalidBody(
                f"settings.corsOrigins: {', '.join(outside)} not among this server's "
                f"REPLAYBUS_CORS_ALLOWED_ORIGINS ({', '.join(allowed)}), so browsers there "
                "could never call it"
            )


def tenant_retention(settings: TenantSettings, default: Retention) -> Retention:
    """The tenant's retention: its own settings, else the server's `default`."""
    age, count = settings.retention_max_age, settings.retention_max_count
    return Retention(
        max_age_us=default.max_age_us if age is None else int(age * 1_000_000),
        max_count=default.max_count if count is None else count,
    )


def channel_retention(
    settings: TenantSettings, definition: ChannelDefinition | None, default: Retention
) -> Retention:
    """A channel's retention: its definition's where set, never beyond the tenant's (a
    definition saved before the tenant's retention was lowered keeps events no longer)."""
    tenant = tenant_retention(settings, default)
    if definition is None:
        return tenant
    age, count = definition.retention_max_age, definition.retention_max_count
    return Retention(
        max_age_us=tenant.max_age_us if not age else min(int(age * 1_000_000), tenant.max_age_us),
        max_count=tenant.max_count if not count else min(count, tenant.max_count),
    )
