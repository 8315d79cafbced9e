"""The composition root: builds every service from one Settings object, inside the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Route

from api import admin, bayeux, events, oauth, openapi, ops, salesforce, stream
from api.access_log import AccessLogMiddleware
from api.body import BodyDeadlineMiddleware
from api.errors import exception_handlers
from api.forwarded import ForwardedMiddleware
from api.services import Lifecycle, Services
from api.tokens import TokenService, load_signing_key, load_verification_keys
from app.access import SCOPES
from app.admin import AdminService
from app.admission import Admission, StreamCaps
from app.bayeux.server import BayeuxServer
from app.catalog import Catalog, ClientRecord, Tenant, UserRecord
from app.clock import Clock, SystemClock
from app.credentials import hash_secret
from app.directory import Directory
from app.engine import Engine
from app.hub import Hub
from app.metrics import Metrics
from app.publishing import PublishService
from app.readiness import ReadinessProbe
from app.schemas import SchemaLimits
from app.settings import Settings
from app.tenancy import ServerLimits
from storage.memory import MemoryCatalog, MemoryEngine
from storage.postgres import PostgresCatalog
from storage.redis import RedisEngine

__all__ = ["create_app"]


async def _bootstrap(catalog: Catalog, settings: Settings) -> None:
    """Create the start-up tenant and, when configured, its OAuth client with every scope."""
    await catalog.add_tenant(Tenant(settings.bootstrap_tenant))
    if settings.bootstrap_client_id is not None and settings.bootstrap_client_secret is not None:
        await catalog.add_client(
            ClientRecord(
                client_id=settings.bootstrap_client_id,
                tenant=settings.bootstrap_tenant,
                secret_hash=hash_secret(settings.bootstrap_client_secret),
                scopes=SCOPES,
                jwt_public_key=settings.bootstrap_client_jwt_key,
            )
        )
    if settings.bootstrap_username is not None and settings.bootstrap_password is not None:
        await catalog.add_user(
            UserRecord(
                username=settings.bootstrap_username,
                tenant=settings.bootstrap_tenant,
                password_hash=hash_secret(settings.bootstrap_password),
            )
        )


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
            hub = await stack.enter_async_context(Hub(engine))
            directory = Directory(
                catalog,
                clock,
                settings.catalog_cache_ttl,
                on_lookup=metrics.catalog_lookup,
            )
            publisher = PublishService(engine, settings, directory, metrics=metrics)
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
                    tenant_id_reuse_delay=2 * settings.catalog_cache_ttl + settings.bayeux_timeout,
                    process_local_catalog=settings.database_url is None and settings.workers > 1,
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
            )
            yield

    routes = [
        Route("/services/oauth2/token", oauth.token, methods=["POST"]),
        Route("/v1/oauth/token", oauth.token, methods=["POST"]),
        Route("/.well-known/jwks.json", oauth.jwks, methods=["GET"]),
        Route("/v1/events/{channel:path}", events.publish, methods=["POST"]),
        Route("/v1/events/{channel:path}", events.history, methods=["GET"]),
        Route("/v1/channels/{channel:path}/schema", events.channel_schema, methods=["GET"]),
        Route("/v1/channels/{channel:path}", events.channel_window, methods=["GET"]),
        Route("/v1/stream/{channel:path}", stream.stream, methods=["GET"]),
        Route(
            "/services/data/{version}/sobjects/{name}",
            salesforce.sobject,
            methods=["POST"],
        ),
        Route(
            "/services/data/{version}/sobjects/{name}/",
            salesforce.sobject,
            methods=["POST"],
        ),
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
        Route("/cometd", bayeux.cometd, methods=["POST"]),
        Route("/cometd/replay/{version}", bayeux.cometd, methods=["POST"]),
        Route("/cometd/{version}", bayeux.cometd, methods=["POST"]),
        Route("/cometd/{version}/{suffix:path}", bayeux.cometd, methods=["POST"]),
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
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers=exception_handlers,
        lifespan=lifespan,
    )
