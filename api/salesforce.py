"""Salesforce-style REST publishing: `POST /services/data/v{N.N}/sobjects/{Name}__e` and
`POST /services/data/v{N.N}/composite/sobjects`, answered in Salesforce's shapes. A separate
protocol boundary, so it has its own error table (Salesforce's `[{"errorCode","message"}]`)."""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from api.auth import authenticate
from api.body import read_json
from api.errors import retry_after_headers
from api.events import schema_by_id
from api.responses import JSONBytesResponse
from api.services import Services
from app import errors
from app.model import Published
from app.publishing import Refused, RolledBack

__all__ = [
    "SALESFORCE_ERRORS",
    "composite_sobjects",
    "event_schema",
    "salesforce_error_response",
    "sobject",
]

MAX_COLLECTION = 200
_VERSION = re.compile(r"v[0-9]{2,3}\.[0-9]")
_EVENT_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_]*__e")

#: Every domain error class, to its HTTP status and Salesforce `errorCode`.
SALESFORCE_ERRORS: dict[type[errors.ReplaybusError], tuple[int, str]] = {
    errors.ReplaybusError: (500, "UNKNOWN_EXCEPTION"),
    errors.BadRequest: (400, "INVALID_INPUT"),
    errors.MalformedJson: (400, "JSON_PARSER_ERROR"),
    errors.MalformedBayeux: (400, "JSON_PARSER_ERROR"),
    errors.InvalidBody: (400, "INVALID_FIELD"),
    errors.InvalidParameter: (400, "INVALID_INPUT"),
    errors.InvalidReplayId: (400, "INVALID_INPUT"),
    errors.InvalidChannel: (404, "NOT_FOUND"),
    errors.UnknownChannel: (404, "NOT_FOUND"),
    errors.ChannelNotPublishable: (404, "NOT_FOUND"),
    errors.TooLarge: (413, "REQUEST_TOO_LARGE"),
    errors.EventTooLarge: (400, "STRING_TOO_LONG"),
    errors.RequestTooLarge: (413, "REQUEST_TOO_LARGE"),
    errors.BatchTooLarge: (400, "EXCEEDED_MAX_SIZE_REQUEST"),
    errors.AuthenticationFailed: (401, "INVALID_SESSION_ID"),
    errors.TokenMissing: (401, "INVALID_SESSION_ID"),
    errors.TokenInvalid: (401, "INVALID_SESSION_ID"),
    errors.TokenExpired: (401, "INVALID_SESSION_ID"),
    errors.PermissionDenied: (403, "INSUFFICIENT_ACCESS"),
    errors.InsufficientScope: (403, "INSUFFICIENT_ACCESS"),
    errors.TenantSuspended: (403, "ORG_LOCKED"),
    errors.NotFound: (404, "NOT_FOUND"),
    errors.Conflict: (409, "DUPLICATE_VALUE"),
    errors.IncompatibleSchema: (409, "DUPLICATE_VALUE"),
    errors.TenantRecentlyDeleted: (409, "DUPLICATE_VALUE"),
    errors.SchemaViolation: (400, "FIELD_INTEGRITY_EXCEPTION"),
    errors.ValidationTooCostly: (400, "LIMIT_EXCEEDED"),
    errors.UnusableSchema: (400, "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY"),
    errors.QuotaExceeded: (429, "REQUEST_LIMIT_EXCEEDED"),
    errors.RateLimited: (429, "REQUEST_LIMIT_EXCEEDED"),
    errors.TooManySubscribers: (429, "REQUEST_LIMIT_EXCEEDED"),
    errors.TooManyChannels: (403, "LIMIT_EXCEEDED"),
    errors.ClientGone: (499, "CLIENT_CLOSED_REQUEST"),
    errors.RequestTimeout: (408, "REQUEST_TIMEOUT"),
    errors.ServiceUnavailable: (503, "SERVER_UNAVAILABLE"),
    errors.EngineUnavailable: (503, "SERVER_UNAVAILABLE"),
    errors.NotReplicated: (503, "SERVER_UNAVAILABLE"),
    errors.Draining: (503, "SERVER_UNAVAILABLE"),
    errors.Overloaded: (503, "SERVER_UNAVAILABLE"),
    errors.CatalogUnavailable: (503, "SERVER_UNAVAILABLE"),
}

_SESSION_INVALID = "Session expired or invalid"
_NOT_FOUND = "The requested resource does not exist"


def _message(error: errors.ReplaybusError) -> str:
    if isinstance(error, errors.AuthenticationFailed):
        return _SESSION_INVALID  # jsforce recognises this text and refreshes its token
    if isinstance(error, errors.InvalidChannel | errors.UnknownChannel):
        return _NOT_FOUND
    return error.message


def salesforce_error_response(error: errors.ReplaybusError) -> Response:
    status, code = SALESFORCE_ERRORS[type(error)]
    headers = retry_after_headers(error)
    if status == 408:
        headers["Connection"] = "close"  # the rest of the body may still be on its way
    return JSONBytesResponse(
        [{"message": _message(error), "errorCode": code, "fields": []}], status, headers
    )


def _refused(request: Request, error: errors.ReplaybusError) -> Response:
    """The error response of a handler here; store outages are counted for the metrics."""
    if isinstance(error, errors.EngineUnavailable):
        request.app.state.services.metrics.engine_errors.labels("salesforce").inc()
    return salesforce_error_response(error)


def _save_result(published: Published) -> dict[str, Any]:
    """`success` means stored; the `OPERATION_ENQUEUED` message carries the EventUuid that
    subscribers see as `data.event.EventUuid`."""
    return {
        "id": published.uuid,
        "success": True,
        "errors": [{"statusCode": "OPERATION_ENQUEUED", "message": published.uuid, "fields": []}],
    }


def _failed(code: str, message: str) -> dict[str, Any]:
    return {
        "id": None,
        "success": False,
        "errors": [{"statusCode": code, "message": message, "fields": []}],
    }


def _check_version(request: Request) -> None:
    if not _VERSION.fullmatch(str(request.path_params["version"])):
        raise errors.UnknownChannel(_NOT_FOUND)


def _event_channel(name: str) -> str:
    if not _EVENT_TYPE.fullmatch(name):
        raise errors.UnknownChannel(f"{name!r} is not a platform event type (Name__e)")
    return f"/event/{name}"


async def sobject(request: Request) -> Response:
    """`POST /services/data/v{N.N}/sobjects/{Name}__e[/]`: publish to `/event/{Name}__e`."""
    services: Services = request.app.state.services
    try:
        _check_version(request)
        principal, tenant = await authenticate(request, services)
        principal.require("publish")
        channel = _event_channel(str(request.path_params["name"]))
        body = await read_json(request, services.settings.max_request_size)
        if not isinstance(body, dict):
            raise errors.InvalidBody("the body must be a JSON object of event fields")
        [published] = await services.publisher.publish(
            principal, tenant, channel, [body], transport="salesforce"
        )
    except errors.ReplaybusError as error:
        return _refused(request, error)
    return JSONBytesResponse(_save_result(published), 201)


def _record_type(record: object) -> str | None:
    if not isinstance(record, dict):
        return None
    attributes = record.get("attributes")
    kind = attributes.get("type") if isinstance(attributes, dict) else None
    return kind if isinstance(kind, str) else None


async def composite_sobjects(request: Request) -> Response:
    """`POST /services/data/v{N.N}/composite/sobjects`: up to 200 records, possibly of several
    event types; one SaveResult per record, in request order. Every record, the channel quota
    and the publish rate are checked before anything is stored; with `allOrNone`, nothing is
    stored unless everything passes, and across several event types it needs an
    `Idempotency-Key` so that a store failing midway is completed by sending the request again
    (`app.publishing.PublishService.publish_records`)."""
    services: Services = request.app.state.services
    try:
        _check_version(request)
        principal, tenant = await authenticate(request, services)
        principal.require("publish")
        body = await read_json(request, services.settings.max_request_size)
        records = body.get("records") if isinstance(body, dict) else None
        if not isinstance(records, list) or not records:
            raise errors.InvalidBody('the body must be {"allOrNone": bool, "records": [...]}')
        if len(records) > MAX_COLLECTION:
            raise errors.BatchTooLarge(f"at most {MAX_COLLECTION} records per request")
        all_or_none = body.get("allOrNone") is True
        results: list[dict[str, Any] | None] = [None] * len(records)
        typed: list[tuple[int, tuple[str, object]]] = []
        for index, record in enumerate(records):
            kind = _record_type(record)
            if kind is None or not _EVENT_TYPE.fullmatch(kind):
                results[index] = _failed(
                    "INVALID_TYPE", "each record needs attributes.type = Name__e"
                )
            else:
                fields = {k: v for k, v in record.items() if k != "attributes"}
                typed.append((index, (f"/event/{kind}", fields)))
        if all_or_none and typed and len(typed) < len(records):
            typed = []  # nothing is stored: the untyped records fail the whole request
        outcomes = await services.publisher.publish_records(
            principal,
            tenant,
            [record for _, record in typed],
            all_or_none=all_or_none,
            idempotency_key=request.headers.get("idempotency-key"),
            transport="salesforce",
        )
        for (index, _), outcome in zip(typed, outcomes, strict=True):
            results[index] = _outcome(outcome)
    except errors.ReplaybusError as error:
        return _refused(request, error)
    return JSONBytesResponse([result or _ROLLED_BACK for result in results], 200)


_ROLLED_BACK = _failed(
    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "Record rolled back because not all records were valid and the request was using "
    "AllOrNone header",
)


def _outcome(outcome: Published | Refused | RolledBack) -> dict[str, Any]:
    if isinstance(outcome, Published):
        return _save_result(outcome)
    if isinstance(outcome, Refused):
        return _failed(SALESFORCE_ERRORS[type(outcome.error)][1], outcome.error.message)
    return _ROLLED_BACK


async def event_schema(request: Request) -> Response:
    """`GET /services/data/v{N.N}/event/eventSchema/{schemaId}`: the payload schema an event's
    `schema` field names (JSON Schema here, where Salesforce serves Avro)."""
    try:
        _check_version(request)
        return await schema_by_id(request, str(request.path_params["schema_id"]))
    except errors.ReplaybusError as error:
        return _refused(request, error)
