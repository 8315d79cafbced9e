"""The composition root: builds every service from one Settings object, inside the lifespan."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Route

from api import admin, bayeux, events, oauth, openapi, ops, salesforce, stream
from api.access_log import AccessLogMiddleware
from api.body import BodyDeadlineMiddleware
from api.direct_routes import DirectRoutes
from api.errors import exception_handlers
from api.forwarded import ForwardedMiddleware
from api.services import Lifecycle, Services
from api.tokens import DEFAULT_AUDIENCE, TokenService, load_signing_key, load_verification_keys
from app.access import SCOPES
from app.admin import AdminService, tenant_id_reuse_delay
from app.admission import Admission, StreamCaps
from app.bayeux.server import BayeuxServer
from app.catalog import Catalog, ClientRecord, Tenant, UserRecord
from app.clock import Clock, SystemClock
from app.credential_guard import CredentialGuard, hash_concurrency
from app.credentials import hash_secret
from app.delivery import CACHED_DELIVERIES, DeliveryCache
from app.directory import Directory
from app.engine import Engine
from app.hub import Hub
from app.metrics import Metrics
from app.publishing import PublishService
from app.readiness import ReadinessProbe
from app.schema_cache import ValidatorCache
from app.schemas import SchemaLimits
from app.settings import Settings
from app.tenancy import ServerLimits
from app.throttle import Throttle
from app.ticker import Ticker
from storage.memory import MemoryCatalog, MemoryEngine
from storage.postgres import PostgresCatalog
from storage.redis import RedisEngine

__all__ = ["create_app"]

log = logging.getLogger("replaybus.bootstrap")


async def _bootstrap(catalog: Catalog, settings: Settings) -> None:
    """Seed the start-up tenant, OAuth client (every scope) and user, each inserted only if
    absent (in one step), so a restart never undoes an operator's revocation, rotation or scope
    change; processes starting together on a fresh database create each once (one client
    generation, whose tokens all of them take); and a change made between one process's look
    and its write stands.

    On the embedded catalog (development: no REPLAYBUS_DATABASE_URL) the tenant is always
    created; on PostgreSQL only when a bootstrap client or user is configured.
    """
    dev = settings.database_url is None
    client_id, secret = settings.bootstrap_client_id, settings.bootstrap_client_secret
    username, password = settings.bootstrap_username, settings.bootstrap_password
    if not dev and client_id is None and username is None:
        return
    tenant = settings.bootstrap_tenant
    await catalog.add_tenant(Tenant(tenant))
    if client_id is not None and secret is not None:
        created = False
        if await catalog.client(client_id) is None:  # spares the hash on every later start
            created = await catalog.add_client_if_absent(
                ClientRecord(
                    client_id=client_id,
                    tenant=tenant,
                    secret_hash=await asyncio.to_thread(hash_secret, secret),
                    scopes=SCOPES,
                    jwt_public_key=settings.bootstrap_client_jwt_key,
                    # Each process seeds its own embedded catalog, and every worker must take
                    # the others' tokens: a generation only where the catalog is shared.
                    generation="" if dev else secrets.token_hex(8),
                )
            )
        if created:
            log.info("bootstrap client %s created in tenant %s", client_id, tenant)
        else:
            log.info("bootstrap client %s exists: left as it is", client_id)
    if username is not None and password is not None:
        created = False
        if await catalog.user(username) is None:
            created = await catalog.add_user_if_absent(
                UserRecord(
                    username=username,
                    tenant=tenant,
                    password_hash=await asyncio.to_thread(hash_secret, password),
                )
            )
        if created:
            log.info("bootstrap user %s created in tenant %s", username, tenant)
        else:
            log.info("bootstrap user %s exists: left as it is", username)


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    lifecycle: Lifecycle | None = None,
    metrics_dir: str | None = None,
) -> Starlette:
    """The application; `metrics_dir` is the worker processes' shared metrics folder."""
    clock = clock or SystemClock()
    lifecycle = lifecycle or Lifecycle()
    metrics = Metrics(channel_labels=settings.metrics_channel_labels, multiprocess_dir=metrics_dir)
    tokens = TokenService(
        load_signing_key(settings),
        settings.token_ttl,
        clock,
        settings.refresh_token_ttl,
        load_verification_keys(settings),
        audience=settings.public_url or DEFAULT_AUDIENCE,
    )
    credentials = CredentialGuard(
        clock,
        concurrency=hash_concurrency(
            settings.token_hash_concurrency, os.cpu_count(), settings.workers
        ),
        cache_ttl=settings.token_secret_cache_ttl,
        rate=settings.token_rate_per_client,
        burst=settings.token_burst_per_client,
        retry_spread=settings.reconnect_jitter,
        on_check=lambda result: metrics.credential_checks.labels(result).inc(),
        on_refused=lambda reason: metrics.token_refused.labels(reason).inc(),
    )
    token_addresses = Throttle(
        clock, settings.token_rate_per_address, settings.token_burst_per_address
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            engine: Engine
            if settings.redis_url is not None:
                engine = await stack.enter_async_context(
                    RedisEngine(
                        settings.redis_url,
                        settings.idempotency_ttl,
                        cluster=settings.redis_cluster,
                        max_connections=settings.redis_max_connections,
                        connect_timeout=settings.redis_connect_timeout,
                        command_timeout=settings.redis_command_timeout,
                        pool_timeout=settings.redis_pool_timeout,
                        health_check_interval=settings.redis_health_check_interval,
                        catch_up_events=settings.subscriber_queue_size,
                        catch_up_bytes=settings.subscriber_queue_bytes,
                        drop_timeout=settings.tenant_drop_timeout,
                        min_replicas=settings.redis_min_replicas,
                        replica_timeout=settings.redis_replica_timeout,
                        fsync_always=settings.redis_fsync == "always",
                    )
                )
            else:
                engine = await stack.enter_async_context(
                    MemoryEngine(clock, settings.idempotency_ttl)
                )
            catalog: Catalog
            if settings.database_url is not None:
                catalog = await stack.enter_async_context(
                    PostgresCatalog(
                        settings.database_url,
                        connect_timeout=settings.database_connect_timeout,
                        command_timeout=settings.database_command_timeout,
                        pool_timeout=settings.database_pool_timeout,
                    )
                )
            else:
                catalog = await stack.enter_async_context(MemoryCatalog())
            deliveries = DeliveryCache(CACHED_DELIVERIES, settings.bayeux_cache_size)
            hub = await stack.enter_async_context(Hub(engine, deliveries))
            ticker = await stack.enter_async_context(
                Ticker(stream.tick_interval(settings), lifecycle.draining)
            )
            directory = Directory(
                catalog,
                clock,
                settings.catalog_cache_ttl,
                max_stale=settings.catalog_max_stale,
                on_lookup=metrics.catalog_lookup,
            )
            validators = await stack.enter_async_context(ValidatorCache())
            publisher = PublishService(
                engine,
                settings,
                directory,
                metrics=metrics,
                validators=validators,
                clock=clock,
            )
            bayeux_server = await stack.enter_async_context(
                BayeuxServer(
                    engine,
                    hub,
                    settings,
                    clock,
                    lifecycle.draining,
                    check_channel=publisher.definition,
                    metrics=metrics,
                )
            )
            await _bootstrap(catalog, settings)
            app.state.services = Services(
                settings=settings,
                clock=clock,
                engine=engine,
                catalog=catalog,
                hub=hub,
                publisher=publisher,
                tokens=tokens,
                lifecycle=lifecycle,
                bayeux=bayeux_server,
                directory=directory,
                admin=AdminService(
                    catalog,
                    engine,
                    directory,
                    clock,
                    tenant_id_reuse_delay=tenant_id_reuse_delay(settings),
                    process_local_catalog=settings.database_url is None and settings.workers > 1,
                    durable_catalog=settings.database_url is not None,
                    limits=ServerLimits.of(settings),
                    schema_limits=SchemaLimits.of(settings),
                ),
                metrics=metrics,
                replays=Admission(
                    "replays",
                    settings.max_concurrent_replays,
                    settings.reconnect_jitter,
                    metrics.admission_refused.labels("replay").inc,
                ),
                streams=StreamCaps(
                    settings.sse_max_streams,
                    settings.reconnect_jitter,
                    metrics.admission_refused.labels("stream").inc,
                ),
                readiness=ReadinessProbe(engine, hub, settings.ready_timeout),
                credentials=credentials,
                token_addresses=token_addresses,
                ticker=ticker,
            )
            yield

    # The hot paths, publishing and Bayeux long-polling: answered by `DirectRoutes` (tried in
    # this order), listed in the router all the same (its 405 answers and the route table stay
    # as they were).
    publish = [Route("/v1/events/{channel:path}", events.publish, methods=["POST"])]
    salesforce_publish = [
        Route("/services/data/{version}/sobjects/{name}", salesforce.sobject, methods=["POST"]),
        Route("/services/data/{version}/sobjects/{name}/", salesforce.sobject, methods=["POST"]),
    ]
    long_polling = [
        Route("/cometd", bayeux.cometd, methods=["POST"]),
        Route("/cometd/replay/{version}", bayeux.cometd, methods=["POST"]),
        Route("/cometd/{version}", bayeux.cometd, methods=["POST"]),
        Route("/cometd/{version}/{suffix:path}", bayeux.cometd, methods=["POST"]),
    ]
    direct = [*publish, *salesforce_publish, *long_polling]
    routes = [
        Route("/services/oauth2/token", oauth.token, methods=["POST"]),
        Route("/v1/oauth/token", oauth.token, methods=["POST"]),
        Route("/services/oauth2/revoke", oauth.revoke, methods=["POST"]),
        Route("/.well-known/jwks.json", oauth.jwks, methods=["GET"]),
        *publish,
        Route("/v1/events/{channel:path}", events.history, methods=["GET"]),
        Route("/v1/channels/{channel:path}/schema", events.channel_schema, methods=["GET"]),
        Route("/v1/channels/{channel:path}", events.channel_window, methods=["GET"]),
        Route("/v1/stream/{channel:path}", stream.stream, methods=["GET"]),
        *salesforce_publish,
        Route(
            "/services/data/{version}/event/eventSchema/{schema_id}",
            salesforce.event_schema,
            methods=["GET"],
        ),
        Route(
            "/services/data/{version}/composite/sobjects",
            salesforce.composite_sobjects,
            methods=["POST"],
        ),
        *long_polling,
        *admin.routes,
        Route("/openapi.json", openapi.openapi, methods=["GET"]),
        Route("/healthz", ops.healthz, methods=["GET"]),
        Route("/readyz", ops.readyz, methods=["GET"]),
        Route("/metrics", ops.metrics, methods=["GET"]),
    ]
    # First (outermost): the client address the access log and every route see, with the TCP
    # peer kept for /metrics.
    middleware = [
        Middleware(ForwardedMiddleware, trusted=settings.forwarded_allow_ips),
        Middleware(BodyDeadlineMiddleware, timeout=settings.body_timeout),
    ]
    if settings.access_log:
        middleware.append(Middleware(AccessLogMiddleware))
    if settings.cors_origins:
        # Credentials only with an explicit allow-list: with `*` any page could otherwise make
        # a visitor's browser send them. CometD's browser transport always sends credentials,
        # so its pages' origins must be listed (replaybus sets no cookies and reads tokens only
        # from headers, so allowing credentials to listed origins exposes nothing).
        any_origin = settings.cors_origins == ["*"]
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_credentials=not any_origin,
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"],
                expose_headers=["Retry-After", "WWW-Authenticate"],
                max_age=600,
            )
        )
    # Last (innermost): the direct routes, inside everything above as the router is.
    middleware.append(Middleware(DirectRoutes, routes=direct, handlers=exception_handlers))
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers=exception_handlers,
        lifespan=lifespan,
    )
