"""Liveness and readiness."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from api.responses import JSONBytesResponse
from api.services import Services
from app.errors import ServiceUnavailable

__all__ = ["healthz", "readyz"]


async def healthz(request: Request) -> Response:
    """The process is up and serving HTTP."""
    return JSONBytesResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready for traffic: not draining, and the engine answers; with this node's load."""
    services: Services = request.app.state.services
    if services.lifecycle.draining.is_set():
        return JSONBytesResponse({"error": "draining", "message": "shutting down"}, 503)
    try:
        await services.engine.ping()
    except ServiceUnavailable as error:
        return JSONBytesResponse({"error": "engine_unavailable", "message": error.message}, 503)
    return JSONBytesResponse(
        {
            "status": "ready",
            "heldConnects": services.bayeux.held_connects,
            "liveSubscribers": services.hub.subscriber_count,
        }
    )
