"""What the routes need, assembled once per process by the composition root."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from starlette.requests import HTTPConnection

from api.tokens import TokenService
from app.admin import AdminService
from app.admission import Admission, StreamCaps
from app.bayeux.server import BayeuxServer
from app.catalog import Catalog
from app.clock import Clock
from app.credential_guard import CredentialGuard
from app.directory import Directory
from app.engine import Engine
from app.hub import Hub
from app.metrics import Metrics
from app.publishing import PublishService
from app.readiness import ReadinessProbe
from app.settings import Settings
from app.throttle import Throttle
from app.ticker import Ticker

__all__ = ["Lifecycle", "Services"]


@dataclass(slots=True)
class Lifecycle:
    """Set by the server's shutdown signal: readiness fails and streams end with a retry hint."""

    draining: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    clock: Clock
    engine: Engine
    catalog: Catalog
    hub: Hub
    publisher: PublishService
    tokens: TokenService
    lifecycle: Lifecycle
    bayeux: BayeuxServer
    directory: Directory
    admin: AdminService
    metrics: Metrics
    replays: Admission
    streams: StreamCaps
    readiness: ReadinessProbe
    credentials: CredentialGuard  # the token endpoint's secret checks, bounded
    token_addresses: Throttle  # the token endpoint's requests per client address
    ticker: Ticker  # the periodic chores of SSE streams (heartbeats, expiry, re-checks)
    #: SSE stream leases released at once: a mass disconnect releases its leases a few at a time
    #: rather than queueing everyone else's store calls behind thousands of its own.
    lease_releases: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(8))

    def instance_url(self, connection: HTTPConnection) -> str:
        """The base URL clients should use: the configured one, else this request's own."""
        if self.settings.public_url is not None:
            return self.settings.public_url
        return str(connection.base_url).rstrip("/")
