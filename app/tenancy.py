"""Tenant settings as JSON (the admin API's and the catalog's form), validated field by field."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

from app.catalog import TenantSettings
from app.errors import InvalidBody

__all__ = [
    "TENANT_ID",
    "check_setting",
    "describe_settings",
    "settings_from_json",
    "settings_to_json",
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
