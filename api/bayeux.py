"""`POST /cometd[/{version}[/...]]`: the Bayeux long-polling endpoint. It moves bytes only:
read and decode the body, establish credentials, let the Bayeux server process the messages,
write the reply array. Every Bayeux outcome is HTTP 200 with a JSON array."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from api.auth import admitted, token_from_header
from api.body import read_body
from api.connection import DisconnectWatch
from api.services import Services
from app.bayeux import codec
from app.bayeux.codec import Message
from app.bayeux.server import Credentials
from app.errors import (
    AuthenticationFailed,
    EngineUnavailable,
    MalformedBayeux,
    PermissionDenied,
    RequestTimeout,
    RequestTooLarge,
    ServiceUnavailable,
    TenantSuspended,
)

__all__ = ["cometd"]

_MEDIA_TYPE = "application/json;charset=UTF-8"


def _array(replies: list[Message], status: int) -> Response:
    return Response(codec.encode_replies(replies), status, media_type=_MEDIA_TYPE)


async def credentials(request: Request, services: Services) -> Credentials:
    token = token_from_header(request.headers.get("authorization"))
    if token is None:
        return Credentials(presented=False, principal=None)
    try:
        principal, tenant = await admitted(request, services, token)
    except TenantSuspended:
        return Credentials(presented=True, principal=None, suspended=True)
    except (AuthenticationFailed, PermissionDenied):
        return Credentials(presented=True, principal=None)
    return Credentials(presented=True, principal=principal, tenant=tenant)


async def cometd(request: Request) -> Response:
    services: Services = request.app.state.services
    try:
        body = await read_body(request, services.settings.bayeux_max_request_size)
    except RequestTooLarge:
        error = {"channel": "/meta/unsuccessful", "successful": False}
        return _array([{**error, "error": codec.REQUEST_TOO_LARGE}], 413)
    except RequestTimeout:
        error = {"channel": "/meta/unsuccessful", "successful": False}
        return _array([{**error, "error": codec.REQUEST_TIMEOUT}], 408)
    try:
        messages = codec.decode_messages(body, request.headers.get("content-type", ""))
    except MalformedBayeux:
        error = {"channel": "/meta/unsuccessful", "successful": False}
        return _array([{**error, "error": codec.MALFORMED}], 400)
    version = request.path_params.get("version")

    try:
        replies = await services.bayeux.process(
            messages,
            await credentials(request, services),
            version,
            lambda on_gone: DisconnectWatch(request.receive, on_gone),
        )
    except ServiceUnavailable as unavailable:
        if isinstance(unavailable, EngineUnavailable):
            services.metrics.engine_errors.labels("bayeux").inc()
        # A transport failure to CometD clients (non-200): they retry, with the same clientId.
        error = {"channel": "/meta/unsuccessful", "successful": False}
        return _array([{**error, "error": codec.UNAVAILABLE}], 503)
    return Response(codec.encode_replies(replies), 200, media_type=_MEDIA_TYPE)
