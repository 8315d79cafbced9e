"""Native REST: publish, history pull and channel window."""

from __future__ import annotations

import re
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from api.admin import schema_json
from api.auth import authenticate
from api.body import read_json
from api.responses import JSONBytesResponse
from api.services import Services
from app.access import Principal
from app.catalog import ChannelDefinition, Tenant
from app.channels import parse_name
from app.delivery import Delivery
from app.envelope import published_json, window_json
from app.errors import InvalidParameter, NotFound
from app.model import ChannelKey
from app.recovery import ALL_RETAINED, Gap, parse_position, recover

__all__ = ["channel_schema", "channel_window", "history", "publish", "schema_by_id"]

_DEFAULT_HISTORY_LIMIT = 100


def _channel(request: Request) -> str:
    return "/" + str(request.path_params["channel"])


async def publish(request: Request) -> Response:
    """`POST /v1/events/{channel}`: an object is one event, an array a batch (stored atomically).
    201 with `{"replayId","uuid","createdDate",...}` (an array of them for a batch)."""
    services: Services = request.app.state.services
    principal, tenant = await authenticate(request, services)
    principal.require("publish")
    body = await read_json(request, services.settings.max_request_size)
    channel = _channel(request)
    payloads = body if isinstance(body, list) else [body]
    results = await services.publisher.publish(
        principal, tenant, channel, payloads, request.headers.get("idempotency-key")
    )
    content: Any = [published_json(channel, result) for result in results]
    return JSONBytesResponse(content if isinstance(body, list) else content[0], 201)


async def _readable_key(
    request: Request, services: Services, principal: Principal, tenant: Tenant
) -> tuple[ChannelKey, ChannelDefinition | None]:
    """The channel to read and its definition (an undefined one is refused when the tenant
    requires definitions)."""
    name = parse_name(_channel(request))
    principal.require("subscribe", name)
    definition = await services.publisher.definition(tenant, name)
    return ChannelKey(principal.tenant, name), definition


def _limit(request: Request, maximum: int) -> int:
    text = request.query_params.get("limit")
    if text is None:
        return min(_DEFAULT_HISTORY_LIMIT, maximum)
    if not re.fullmatch(r"[0-9]{1,9}", text) or not 1 <= int(text) <= maximum:
        raise InvalidParameter(f"limit must be an integer from 1 to {maximum}, got {text!r}")
    return int(text)


async def history(request: Request) -> Response:
    """`GET /v1/events/{channel}?after=N&limit=L`: retained events after N, oldest first.

    `after` defaults to -2 (from the oldest retained). A position that cannot be resumed is
    reported in `gap` and the page starts at the oldest retained event; `next` is the `after`
    to ask for the following page.
    """
    services: Services = request.app.state.services
    principal, tenant = await authenticate(request, services)
    key, _ = await _readable_key(request, services, principal, tenant)
    requested = parse_position(request.query_params.get("after", str(ALL_RETAINED)))
    limit = _limit(request, services.settings.history_max_limit)
    decision = recover(requested, await services.engine.window(key))
    after = decision.resume_after if isinstance(decision, Gap) else decision.after
    page = await services.engine.read(key, after, limit, services.settings.history_max_bytes)
    gap = decision if isinstance(decision, Gap) else None
    if gap is None and after < page.window.low_water:
        gap = Gap(requested, page.window.earliest, page.window.latest, page.window.low_water)
    events = [orjson.Fragment(Delivery(event).envelope) for event in page.events]
    content: dict[str, Any] = {
        "channel": key.name,
        "events": events,
        "next": page.events[-1].replay_id if page.events else max(after, page.window.low_water),
        "window": window_json(page.window),
    }
    if gap is not None:
        content["gap"] = {
            "requested": gap.requested,
            "earliest": gap.earliest,
            "latest": gap.latest,
        }
    return JSONBytesResponse(content)


async def channel_window(request: Request) -> Response:
    """`GET /v1/channels/{channel}`: the retention window and its limits."""
    services: Services = request.app.state.services
    principal, tenant = await authenticate(request, services)
    key, definition = await _readable_key(request, services, principal, tenant)
    window = await services.engine.window(key)
    retention = services.publisher.retention(tenant, definition)
    content = {
        "channel": key.name,
        **window_json(window),
        "retention": {
            "maxAgeSeconds": retention.max_age_us / 1_000_000,
            "maxCount": retention.max_count,
        },
    }
    return JSONBytesResponse(content)


async def channel_schema(request: Request) -> Response:
    """`GET /v1/channels/{channel}/schema`: the channel's current payload schema. (A channel
    literally named `/event/schema` is served its window, as `/v1/channels/event/schema`.)"""
    channel = "/" + str(request.path_params["channel"])
    if channel.count("/") < 2:
        request.scope["path_params"]["channel"] = channel[1:] + "/schema"
        return await channel_window(request)
    services: Services = request.app.state.services
    principal, tenant = await authenticate(request, services)
    name = parse_name(channel)
    _require_schema_reader(principal, name)
    definition = await services.publisher.definition(tenant, name)
    if definition is None or definition.schema is None:
        raise NotFound(f"channel {name} has no schema")
    return JSONBytesResponse(schema_json(definition.schema))


def _require_schema_reader(principal: Principal, name: str) -> None:
    """Who may read a channel's schema: its publishers and its subscribers."""
    if not principal.allows("publish", name):
        principal.require("subscribe", name)


async def schema_by_id(request: Request, schema_id: str) -> Response:
    """A schema version by id, for the tenant of the request's token only (another tenant's
    looks absent), to a token that may read its channel's schema."""
    services: Services = request.app.state.services
    principal, _ = await authenticate(request, services)
    version = None
    if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", schema_id):
        version = await services.catalog.schema(schema_id)
    if version is None or version.tenant != principal.tenant:
        raise NotFound(f"there is no schema {schema_id}")
    _require_schema_reader(principal, version.channel)
    return JSONBytesResponse(schema_json(version))
