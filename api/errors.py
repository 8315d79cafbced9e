"""The one place where domain errors become HTTP responses on the native API."""

from __future__ import annotations

import logging
import math

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from api.responses import JSONBytesResponse
from app import errors

__all__ = ["HTTP_ERRORS", "error_response", "exception_handlers", "retry_after_headers"]

log = logging.getLogger("replaybus.api")

#: Every domain error class, to its HTTP status and the `error` code of the JSON body.
HTTP_ERRORS: dict[type[errors.ReplaybusError], tuple[int, str]] = {
    errors.ReplaybusError: (500, "internal_error"),
    errors.BadRequest: (400, "bad_request"),
    errors.MalformedJson: (400, "malformed_json"),
    errors.MalformedBayeux: (400, "malformed_bayeux"),
    errors.InvalidBody: (400, "invalid_body"),
    errors.InvalidParameter: (400, "invalid_parameter"),
    errors.InvalidReplayId: (400, "invalid_replay_id"),
    errors.SchemaViolation: (400, "schema_violation"),
    errors.ValidationTooCostly: (400, "validation_too_costly"),
    errors.InvalidChannel: (422, "invalid_channel"),
    errors.UnknownChannel: (404, "unknown_channel"),
    errors.ChannelNotPublishable: (403, "channel_not_publishable"),
    errors.TooLarge: (413, "too_large"),
    errors.EventTooLarge: (413, "event_too_large"),
    errors.RequestTooLarge: (413, "request_too_large"),
    errors.BatchTooLarge: (413, "batch_too_large"),
    errors.AuthenticationFailed: (401, "unauthenticated"),
    errors.TokenMissing: (401, "missing_token"),
    errors.TokenInvalid: (401, "invalid_token"),
    errors.TokenExpired: (401, "expired_token"),
    errors.PermissionDenied: (403, "forbidden"),
    errors.InsufficientScope: (403, "insufficient_scope"),
    errors.TenantSuspended: (403, "tenant_suspended"),
    errors.NotFound: (404, "not_found"),
    errors.Conflict: (409, "conflict"),
    errors.IncompatibleSchema: (409, "incompatible_schema"),
    errors.TenantRecentlyDeleted: (409, "tenant_recently_deleted"),
    errors.UnusableSchema: (409, "unusable_schema"),
    errors.QuotaExceeded: (429, "quota_exceeded"),
    errors.RateLimited: (429, "rate_limited"),
    errors.TooManySubscribers: (429, "too_many_subscribers"),
    errors.TooManyChannels: (403, "too_many_channels"),
    errors.ClientGone: (499, "client_closed_request"),
    errors.RequestTimeout: (408, "request_timeout"),
    errors.ServiceUnavailable: (503, "unavailable"),
    errors.EngineUnavailable: (503, "engine_unavailable"),
    errors.NotReplicated: (503, "not_replicated"),
    errors.Draining: (503, "draining"),
    errors.Overloaded: (503, "overloaded"),
    errors.CatalogUnavailable: (503, "catalog_unavailable"),
}

_STATUS_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
}


def retry_after_headers(error: errors.ReplaybusError) -> dict[str, str]:
    """`Retry-After` for a refusal that waiting cures: a quota's own wait, else 1 s for a 503."""
    if (
        isinstance(error, errors.QuotaExceeded | errors.Overloaded | errors.TenantRecentlyDeleted)
        and error.retry_after
    ):
        return {"Retry-After": str(max(1, math.ceil(error.retry_after)))}
    if isinstance(error, errors.ServiceUnavailable):
        return {"Retry-After": "1"}
    return {}


def error_response(error: errors.ReplaybusError) -> Response:
    status, code = HTTP_ERRORS[type(error)]
    headers = retry_after_headers(error)
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="replaybus"'
    if status == 408:
        headers["Connection"] = "close"  # the rest of the body may still be on its way
    body = {"error": code, "message": error.message, **error.details}
    return JSONBytesResponse(body, status, headers)


async def _domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.ReplaybusError)
    if isinstance(exc, errors.EngineUnavailable):
        request.app.state.services.metrics.engine_errors.labels("rest").inc()
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _STATUS_CODES.get(exc.status_code, "http_error")
    message = {404: f"no such resource: {request.url.path}", 405: "method not allowed here"}.get(
        exc.status_code, exc.detail
    )
    return JSONBytesResponse({"error": code, "message": message}, exc.status_code, exc.headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONBytesResponse(
        {"error": "internal_error", "message": "the server failed to handle this request"}, 500
    )


exception_handlers = {
    errors.ReplaybusError: _domain_error,
    HTTPException: _http_error,
    Exception: _unexpected,
}
