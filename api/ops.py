"""Liveness, readiness and metrics."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_address

from starlette.requests import Request
from starlette.responses import Response

from api.forwarded import forwarded_hosts, peer_host
from api.responses import JSONBytesResponse
from api.services import Services
from app.errors import ServiceUnavailable
from app.metrics import CONTENT_TYPE

__all__ = ["healthz", "metrics", "readyz"]


async def healthz(request: Request) -> Response:
    """The process is up and serving HTTP."""
    return JSONBytesResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready for traffic: not draining, and a canary event published through the engine came
    back through this node's live fan-out; with this node's load."""
    services: Services = request.app.state.services
    if services.lifecycle.draining.is_set():
        return JSONBytesResponse({"error": "draining", "message": "shutting down"}, 503)
    try:
        await services.readiness.check()
    except ServiceUnavailable as error:
        return JSONBytesResponse({"error": "not_ready", "message": error.message}, 503)
    return JSONBytesResponse(
        {
            "status": "ready",
            "heldConnects": services.bayeux.held_connects,
            "liveSubscribers": services.hub.subscriber_count,
        }
    )


async def metrics(request: Request) -> Response:
    """Prometheus text format (of every worker of this node, when there are several), to
    clients on the allowed networks only: metrics name tenants. Both the TCP peer and every
    address the request says it was forwarded for must be allowed, so neither a forged
    `X-Forwarded-For` nor a request relayed by an in-cluster ingress gets through."""
    services: Services = request.app.state.services
    networks = services.settings.metrics_networks()
    hosts = [peer_host(request.scope), *forwarded_hosts(request.headers)]
    if networks is not None and not all(_within(host, networks) for host in hosts):
        return JSONBytesResponse(
            {
                "error": "forbidden",
                "message": "metrics are served to REPLAYBUS_METRICS_ALLOWED_NETWORKS only: "
                "the connection and every address it was forwarded for must be on them",
            },
            403,
        )
    return Response(services.metrics.exposition(), media_type=CONTENT_TYPE)


def _within(host: str, networks: list[IPv4Network | IPv6Network]) -> bool:
    try:
        address = ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in networks)
