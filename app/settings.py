"""One frozen settings object, built once at start-up from `REPLAYBUS_*` and CLI flags.

Every field declares its environment variable, parser and documentation in its metadata, so
validation messages name the setting and the README table is checked against this module.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ENV_PREFIX", "Settings", "SettingsError", "describe_settings"]

ENV_PREFIX = "REPLAYBUS_"
_LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
_BAYEUX_GAP = ("end-session", "report")
_REDIS_FSYNC = ("off", "always")


class SettingsError(ValueError):
    """A setting has an unusable value; the message names the environment variable."""


def _parse_int(text: str) -> int:
    if not re.fullmatch(r"-?[0-9]+", text.strip()):
        raise ValueError("expected an integer")
    return int(text)


_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)?")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def _parse_duration(text: str) -> float:
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise ValueError("expected a duration such as 15s, 500ms, 10m, 72h or 7d (plain = seconds)")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


_SIZE = re.compile(r"([0-9]+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "kb": 1000, "mb": 1000**2}
_SIZE_UNITS["gb"] = 1000**3


def _parse_size(text: str) -> int:
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ValueError("expected a size such as 1048576, 32KiB or 1MiB")
    return int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()]


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _parse_text(text: str) -> str:
    return text


_PARSERS: dict[str, Callable[[str], Any]] = {
    "int": _parse_int,
    "duration": _parse_duration,
    "size": _parse_size,
    "bool": _parse_bool,
    "text": _parse_text,
}


def _setting(
    default: Any,
    kind: str,
    doc: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    secret: bool = False,
) -> Any:
    return field(
        default=default,
        repr=not secret,
        metadata={"kind": kind, "doc": doc, "min": minimum, "max": maximum, "secret": secret},
    )


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob of a replaybus node. Durations are seconds, sizes bytes."""

    host: str = _setting("127.0.0.1", "text", "Interface to bind.")
    port: int = _setting(
        8080, "int", "TCP port to bind (0 picks a free one).", minimum=0, maximum=65535
    )
    workers: int = _setting(
        1, "int", "Worker processes (the memory engine needs 1).", minimum=1, maximum=64
    )
    log_level: str = _setting("info", "text", "One of " + ", ".join(_LOG_LEVELS) + ".")
    log_format: str = _setting(
        "text", "text", "`text` for people, or `json`: one JSON object per line for pipelines."
    )
    access_log: bool = _setting(True, "bool", "Log one line per request (tokens redacted).")
    metrics_allowed_networks: str = _setting(
        "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7",
        "text",
        "Client networks /metrics answers (comma list of CIDRs, or *); others get 403. The "
        "default admits loopback and private addresses: in-cluster scrapers, not the internet.",
    )
    metrics_channel_labels: bool = _setting(
        False,
        "bool",
        "Label published-event metrics with channel names too (one series per channel: keep "
        "off with many channels).",
    )
    public_url: str | None = _setting(
        None,
        "text",
        "Base URL clients use (`instance_url`), the tokens' `aud` and the JWT-bearer audience; "
        "default: the request's own base URL, the audience the node's socket address.",
    )
    cors_allowed_origins: str = _setting(
        "",
        "text",
        "Browser origins allowed to call the API (comma list, or * alone); empty: CORS off. "
        "Only a list admits credentialed requests (CometD's browser transport sends them).",
    )
    forwarded_allow_ips: str = _setting(
        "127.0.0.1", "text", "Proxies trusted for X-Forwarded-For/-Proto (comma list or *)."
    )
    redis_url: str | None = _setting(
        None,
        "text",
        "Use the Redis engine: redis://host:port/db or rediss:// (TLS); default: in memory.",
    )
    database_url: str | None = _setting(
        None,
        "text",
        "Keep the catalog (tenants, clients, users) in PostgreSQL: postgresql://user@host/db. "
        "Default: in memory, seeded at start-up.",
        secret=True,
    )
    redis_cluster: bool = _setting(
        False, "bool", "REPLAYBUS_REDIS_URL names a node of a Redis Cluster (sharded pub/sub)."
    )
    redis_max_connections: int = _setting(
        64,
        "int",
        "Redis connections per process (per node on a cluster); busier moments wait for one.",
        minimum=4,
        maximum=10_000,
    )
    redis_connect_timeout: float = _setting(
        2.0,
        "duration",
        "How long opening a Redis connection may take; then the call fails (503).",
        minimum=0.05,
        maximum=60,
    )
    redis_command_timeout: float = _setting(
        5.0,
        "duration",
        "How long a Redis command may wait for its answer; then the call fails (503) and its "
        "connection is dropped. Also the pub/sub liveness check's patience.",
        minimum=0.05,
        maximum=300,
    )
    redis_pool_timeout: float = _setting(
        5.0,
        "duration",
        "How long a call waits for a free Redis connection when all are busy; then 503 "
        "(standalone Redis; a cluster node's full pool refuses at once).",
        minimum=0.05,
        maximum=300,
    )
    redis_health_check_interval: float = _setting(
        5.0,
        "duration",
        "How long a live-feed pub/sub connection may stay quiet before it is pinged; one "
        "that leaves a ping unanswered for REPLAYBUS_REDIS_COMMAND_TIMEOUT is replaced.",
        minimum=0.05,
        maximum=300,
    )
    redis_min_replicas: int = _setting(
        0,
        "int",
        "Replicas that must confirm a publish (Redis WAIT) before it is acknowledged; fewer "
        "within REPLAYBUS_REDIS_REPLICA_TIMEOUT: 503 `not_replicated` (stored on the primary, "
        "retry with the same Idempotency-Key). On a Redis Cluster, the replicas of the master "
        "holding the channel.",
        minimum=0,
        maximum=16,
    )
    redis_replica_timeout: float = _setting(
        1.0,
        "duration",
        "How long a publish waits for REPLAYBUS_REDIS_MIN_REPLICAS replicas to confirm it; "
        "below REPLAYBUS_REDIS_COMMAND_TIMEOUT.",
        minimum=0.01,
        maximum=60,
    )
    redis_fsync: str = _setting(
        "off",
        "text",
        "`always`: acknowledge only writes Redis fsynced to its append-only file before "
        "answering; a node refuses to start unless Redis has `appendonly yes` and "
        "`appendfsync always`. `off`: whatever Redis is configured to do.",
    )
    tenant_drop_timeout: float = _setting(
        20.0,
        "duration",
        "How long one tenant deletion (or re-creation of a deleted id) may spend dropping the "
        "tenant's data from Redis, which walks the whole keyspace; past it the request answers "
        "503 and the same request again goes on from where it stopped.",
        minimum=1,
        maximum=3600,
    )
    database_connect_timeout: float = _setting(
        5.0,
        "duration",
        "How long opening a PostgreSQL connection may take; then the catalog counts as "
        "unreachable (cached tenants and clients keep working, others get 503).",
        minimum=0.05,
        maximum=300,
    )
    database_command_timeout: float = _setting(
        5.0,
        "duration",
        "How long a catalog query may wait for PostgreSQL; then the catalog counts as unreachable.",
        minimum=0.05,
        maximum=300,
    )
    database_pool_timeout: float = _setting(
        5.0,
        "duration",
        "How long a catalog query waits for a free PostgreSQL connection (connecting "
        "included); then the catalog counts as unreachable.",
        minimum=0.05,
        maximum=300,
    )
    retention_max_age: float = _setting(
        72 * 3600.0, "duration", "Default retention by age.", minimum=1, maximum=365 * 86400
    )
    retention_max_count: int = _setting(
        100_000, "int", "Default retention by count, per channel.", minimum=1, maximum=10_000_000
    )
    max_event_size: int = _setting(
        1024 * 1024, "size", "Largest encoded event payload (413 above).", minimum=64
    )
    max_request_size: int = _setting(
        8 * 1024 * 1024, "size", "Largest REST request body (413 above).", minimum=1024
    )
    max_batch_events: int = _setting(
        1000, "int", "Most events in one batch publish.", minimum=1, maximum=100_000
    )
    max_schema_size: int = _setting(
        64 * 1024,
        "size",
        "Largest channel schema, as compact JSON (400 invalid_body above).",
        minimum=1024,
        maximum=1024 * 1024,
    )
    max_schema_depth: int = _setting(
        32,
        "int",
        "Deepest nesting of objects and arrays in a channel schema (400 invalid_body above).",
        minimum=4,
        maximum=64,
    )
    max_schema_subschemas: int = _setting(
        5000,
        "int",
        "Most subschemas in a channel schema, and that validation may apply to one value once "
        "its $refs are followed (400 invalid_body above).",
        minimum=10,
        maximum=100_000,
    )
    max_validation_steps: int = _setting(
        50_000,
        "int",
        "Most schema validation steps one publish request may take (400 validation_too_costly "
        "above).",
        minimum=1000,
        maximum=100_000_000,
    )
    history_max_limit: int = _setting(
        1000, "int", "Most events per history page and per catch-up read.", minimum=1
    )
    idempotency_ttl: float = _setting(
        24 * 3600.0, "duration", "How long an Idempotency-Key is remembered.", minimum=1
    )
    subscriber_queue_size: int = _setting(
        5000,
        "int",
        "Live events buffered per subscriber before it is cut off (at least 2 full batches).",
        minimum=10,
    )
    subscriber_queue_bytes: int = _setting(
        16 * 1024 * 1024,
        "size",
        "Payload bytes of live events buffered per subscriber before it is cut off (at least "
        "REPLAYBUS_MAX_REQUEST_SIZE, so one batch publish fits).",
        minimum=1024,
    )
    history_max_bytes: int = _setting(
        1024 * 1024,
        "size",
        "Most payload bytes per history page and per catch-up read (at least "
        "REPLAYBUS_MAX_EVENT_SIZE; a page always holds one event).",
        minimum=1024,
    )
    sse_max_streams: int = _setting(
        5000,
        "int",
        "SSE streams one worker process serves at once; more get 503 with a jittered Retry-After.",
        minimum=1,
    )
    sse_max_streams_per_client: int = _setting(
        100,
        "int",
        "SSE streams one client (or user) may hold on one worker process; more get 429. "
        "Tenants can override it (maxStreamsPerClient).",
        minimum=1,
    )
    bayeux_cache_size: int = _setting(
        16 * 1024 * 1024,
        "size",
        "Bytes of encoded events a worker keeps so that each is encoded once for all its "
        "subscribers, SSE and Bayeux, live or reading from the store (0: no cache).",
        minimum=0,
    )
    bayeux_max_channel_reads: int = _setting(
        100,
        "int",
        "Channels one /meta/connect reads; a wildcard session over more channels reads them "
        "in turns over its following connects.",
        minimum=1,
    )
    bayeux_partial_hold: float = _setting(
        2.0,
        "duration",
        "How long a /meta/connect that found nothing is held when it could not read every "
        "channel of its session (more than REPLAYBUS_BAYEUX_MAX_CHANNEL_READS): events on the "
        "channels it did not read wait for the next connects.",
        minimum=0.1,
        maximum=600,
    )
    sse_heartbeat: float = _setting(
        15.0, "duration", "Interval of SSE heartbeat comments.", minimum=0.05, maximum=3600
    )
    sse_retry: float = _setting(
        2.0, "duration", "Reconnect delay suggested to SSE clients (`retry:`).", minimum=0
    )
    reconnect_jitter: float = _setting(
        5.0,
        "duration",
        "Spread of the reconnect delays this node suggests when it ends streams or refuses "
        "work (SSE `retry:` gets up to this much on top of REPLAYBUS_SSE_RETRY; Bayeux "
        "`advice.interval` up to this), so clients do not all come back at once.",
        minimum=0,
        maximum=600,
    )
    max_concurrent_replays: int = _setting(
        200,
        "int",
        "SSE streams this node lets catch up from history at once; more get 503 with a "
        "jittered Retry-After (they resume by ReplayId a little later).",
        minimum=1,
    )
    max_concurrent_handshakes: int = _setting(
        200,
        "int",
        "Bayeux handshakes this node processes at once; more are told to retry after a "
        "jittered interval.",
        minimum=1,
    )
    ready_timeout: float = _setting(
        2.0,
        "duration",
        "How long /readyz waits for its canary event to come back through the live fan-out.",
        minimum=0.1,
        maximum=60,
    )
    bayeux_timeout: float = _setting(
        110.0,
        "duration",
        "How long /meta/connect is held (advice.timeout).",
        minimum=0,
        maximum=600,
    )
    bayeux_reconnect_window: float = _setting(
        40.0, "duration", "A Bayeux session without a connect expires after this.", minimum=1
    )
    bayeux_max_request_size: int = _setting(
        32 * 1024, "size", "Largest Bayeux request body (413 above).", minimum=1024
    )
    bayeux_max_reply_events: int = _setting(
        1000, "int", "Most events in one /meta/connect reply.", minimum=1
    )
    bayeux_max_reply_size: int = _setting(
        1024 * 1024, "size", "Approximate largest /meta/connect reply.", minimum=1024
    )
    bayeux_max_clients: int = _setting(
        2000, "int", "Concurrent Bayeux clients per tenant.", minimum=1
    )
    bayeux_max_subscriptions: int = _setting(
        100, "int", "Subscriptions per Bayeux client.", minimum=1
    )
    bayeux_gap: str = _setting(
        "end-session",
        "text",
        "What a /meta/connect does when a session's position has fallen out of the retention "
        "window: `end-session` ends the session with Salesforce's `400::The replayId {N} ...` "
        "error and `reconnect: none`, so the client handshakes again, resubscribes from its "
        "stored ReplayId and gets the replay error its fallback acts on; `report` delivers the "
        "retained events with the gap in `ext.replaybus.gaps` (which standard clients ignore).",
    )
    token_ttl: float = _setting(
        3600.0, "duration", "Lifetime of issued access tokens.", minimum=10, maximum=7 * 86400
    )
    token_rate_per_address: int = _setting(
        20,
        "int",
        "Token-endpoint requests (token and revoke) per second from one client address, "
        "sustained, per worker process; above it 429 with Retry-After.",
        minimum=1,
    )
    token_burst_per_address: int = _setting(
        200, "int", "Token-endpoint requests one client address may make at once.", minimum=1
    )
    token_rate_per_client: int = _setting(
        2,
        "int",
        "Secret checks per second for one client id (or username, or assertion issuer), "
        "sustained, per worker process; above it 429. A secret proven within "
        "REPLAYBUS_TOKEN_SECRET_CACHE_TTL needs no check and does not count.",
        minimum=1,
    )
    token_burst_per_client: int = _setting(
        10, "int", "Secret checks one client id may need at once.", minimum=1
    )
    token_hash_concurrency: int | None = _setting(
        None,
        "int",
        "Secret hashes (scrypt, about 16 MiB each) each worker process computes at once; more "
        "get 503 with Retry-After at once. Default: the number of cores divided by "
        "REPLAYBUS_WORKERS (at least 1), so a node's workers together run about one per core.",
        minimum=1,
        maximum=256,
    )
    token_secret_cache_ttl: float = _setting(
        300.0,
        "duration",
        "How long a worker process remembers a client secret or password it has proven, so the "
        "same client asking again is not hashed again (0: never). Rotating the secret ends it.",
        minimum=0,
        maximum=3600,
    )
    token_assertions_per_tenant: int = _setting(
        10_000,
        "int",
        "JWT-bearer assertions of one tenant remembered at once, shared by every node, each "
        "until it expires (at most 7 min), so each is accepted once; one more is answered 429 "
        "with Retry-After, in that tenant only.",
        minimum=1,
        maximum=1_000_000,
    )
    signing_key: str | None = _setting(
        None,
        "text",
        "PEM private key (EC P-256, RSA or Ed25519) signing access tokens; default: generated.",
        secret=True,
    )
    signing_key_file: str | None = _setting(
        None, "text", "File holding the PEM signing key (instead of REPLAYBUS_SIGNING_KEY)."
    )
    verification_keys: str | None = _setting(
        None,
        "text",
        "More PEM keys (public or private, concatenated) that still verify tokens: the "
        "previous signing key during a rotation.",
    )
    bootstrap_tenant: str = _setting("default", "text", "Tenant created at start-up.")
    bootstrap_client_id: str | None = _setting(
        None,
        "text",
        "Client id of the start-up OAuth client, created if absent and never changed; default: "
        "generated and printed, on the embedded dev catalog only.",
    )
    bootstrap_client_secret: str | None = _setting(
        None, "text", "Its secret, used when the client is created.", secret=True
    )
    bootstrap_client_jwt_key: str | None = _setting(
        None,
        "text",
        "PEM public key of the start-up client, enabling its JWT-bearer grant.",
    )
    bootstrap_username: str | None = _setting(
        None,
        "text",
        "A user of the start-up tenant, for the password and JWT-bearer grants; created if "
        "absent and never changed.",
    )
    bootstrap_password: str | None = _setting(None, "text", "That user's password.", secret=True)
    operator_key: str | None = _setting(
        None,
        "text",
        "The platform operator's credential for /v1/admin and the CLI (sent as a Bearer token; "
        "24+ characters). Default: none, or generated and printed by a dev `replaybus serve` "
        "(embedded catalog).",
        secret=True,
    )
    catalog_cache_ttl: float = _setting(
        5.0,
        "duration",
        "How stale a node's view of tenants, clients and users may get: suspensions, "
        "revocations and rotated secrets reach every node within this time.",
        minimum=0.1,
        maximum=300,
    )
    catalog_max_stale: float = _setting(
        120.0,
        "duration",
        "How long past REPLAYBUS_CATALOG_CACHE_TTL a node keeps using the tenants, clients and "
        "users it knows while PostgreSQL is unreachable; then they get 503 too. Bounds how long "
        "a node cut off from the catalog serves a deleted tenant or a revoked client, and is "
        "part of the rest a deleted tenant's id takes before it can be created again.",
        minimum=0,
        maximum=86400,
    )
    refresh_token_ttl: float = _setting(
        30 * 86400.0,
        "duration",
        "Lifetime of refresh tokens (password grant); each one works once, and the next one "
        "keeps its expiry.",
        minimum=60,
    )
    keep_alive: float = _setting(
        120.0,
        "duration",
        "How long an idle HTTP connection stays open (announced in a Keep-Alive header).",
        minimum=1,
        maximum=3600,
    )
    header_timeout: float = _setting(
        10.0,
        "duration",
        "How long a client may take to send a request's headers, counted from the connection "
        "(or the first byte of a following request); a connection still sending them is closed.",
        minimum=0.5,
        maximum=600,
    )
    body_timeout: float = _setting(
        60.0,
        "duration",
        "How long a client may take to send a request's body once the server reads it; a body "
        "still incomplete then gets 408 and its connection is closed.",
        minimum=1,
        maximum=3600,
    )
    shutdown_grace: float = _setting(
        10.0, "duration", "How long shutdown waits for open requests.", minimum=1
    )

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str], overrides: Mapping[str, Any] | None = None
    ) -> Settings:
        """Build settings from `REPLAYBUS_*` variables, then apply already-typed `overrides`."""
        values: dict[str, Any] = {}
        for spec in dataclasses.fields(cls):
            env = ENV_PREFIX + spec.name.upper()
            raw = environ.get(env)
            if raw is None or raw == "":
                continue
            try:
                values[spec.name] = _PARSERS[spec.metadata["kind"]](raw)
            except ValueError as error:
                shown = "(hidden)" if spec.metadata["secret"] else repr(raw)
                raise SettingsError(f"{env}: {error}, got {shown}") from None
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        if isinstance(values.get("log_level"), str):
            values["log_level"] = values["log_level"].lower()
        settings = cls(**values)
        settings.validate()
        return settings

    def metrics_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network] | None:
        """The networks /metrics answers; None for any."""
        if self.metrics_allowed_networks.strip() == "*":
            return None
        return [
            ipaddress.ip_network(part.strip(), strict=False)
            for part in self.metrics_allowed_networks.split(",")
            if part.strip()
        ]

    def validate(self) -> None:
        """Check ranges and cross-field rules; raise SettingsError naming the setting."""
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            low, high = spec.metadata["min"], spec.metadata["max"]
            env = ENV_PREFIX + spec.name.upper()
            if value is None or isinstance(value, bool):
                continue
            if low is not None and value < low:
                raise SettingsError(f"{env}: must be at least {low}, got {value}")
            if high is not None and value > high:
                raise SettingsError(f"{env}: must be at most {high}, got {value}")
        if self.metrics_allowed_networks.strip() != "*":
            try:
                self.metrics_networks()
            except ValueError as error:
                raise SettingsError(
                    f"{ENV_PREFIX}METRICS_ALLOWED_NETWORKS: {error}, "
                    f"got {self.metrics_allowed_networks!r}"
                ) from None
        if self.log_format not in ("text", "json"):
            raise SettingsError(
                f"{ENV_PREFIX}LOG_FORMAT: must be text or json, got {self.log_format!r}"
            )
        if self.bayeux_gap not in _BAYEUX_GAP:
            raise SettingsError(
                f"{ENV_PREFIX}BAYEUX_GAP: must be one of {', '.join(_BAYEUX_GAP)}, "
                f"got {self.bayeux_gap!r}"
            )
        if self.log_level not in _LOG_LEVELS:
            raise SettingsError(
                f"{ENV_PREFIX}LOG_LEVEL: must be one of {', '.join(_LOG_LEVELS)}, "
                f"got {self.log_level!r}"
            )
        if self.public_url is not None and not re.fullmatch(r"https?://[^/\s]+", self.public_url):
            raise SettingsError(
                f"{ENV_PREFIX}PUBLIC_URL: must be scheme://host[:port] with no path or trailing "
                f"slash, got {self.public_url!r}"
            )
        if self.max_request_size < self.max_event_size:
            raise SettingsError(
                f"{ENV_PREFIX}MAX_REQUEST_SIZE ({self.max_request_size}) must be at least "
                f"{ENV_PREFIX}MAX_EVENT_SIZE ({self.max_event_size})"
            )
        if self.subscriber_queue_size < 2 * self.max_batch_events:
            raise SettingsError(
                f"{ENV_PREFIX}SUBSCRIBER_QUEUE_SIZE ({self.subscriber_queue_size}) must hold at "
                f"least two full batches: 2 x {ENV_PREFIX}MAX_BATCH_EVENTS "
                f"({self.max_batch_events}), or one batch publish would cut subscribers off"
            )
        if self.subscriber_queue_bytes < self.max_request_size:
            raise SettingsError(
                f"{ENV_PREFIX}SUBSCRIBER_QUEUE_BYTES ({self.subscriber_queue_bytes}) must hold "
                f"at least one full batch: {ENV_PREFIX}MAX_REQUEST_SIZE "
                f"({self.max_request_size}), or one batch publish would cut subscribers off"
            )
        if self.history_max_bytes < self.max_event_size:
            raise SettingsError(
                f"{ENV_PREFIX}HISTORY_MAX_BYTES ({self.history_max_bytes}) must be at least "
                f"{ENV_PREFIX}MAX_EVENT_SIZE ({self.max_event_size}), so the largest event "
                "fits a page"
            )
        if self.redis_url is not None and not re.match(r"rediss?://", self.redis_url):
            raise SettingsError(
                f"{ENV_PREFIX}REDIS_URL: must start with redis:// or rediss://, "
                f"got {self.redis_url.split('@')[-1]!r}"
            )
        if self.redis_fsync not in _REDIS_FSYNC:
            raise SettingsError(
                f"{ENV_PREFIX}REDIS_FSYNC: must be one of {', '.join(_REDIS_FSYNC)}, "
                f"got {self.redis_fsync!r}"
            )
        if self.redis_min_replicas > 0 and self.redis_replica_timeout >= self.redis_command_timeout:
            raise SettingsError(
                f"{ENV_PREFIX}REDIS_REPLICA_TIMEOUT ({self.redis_replica_timeout:g}s) must be "
                f"below {ENV_PREFIX}REDIS_COMMAND_TIMEOUT ({self.redis_command_timeout:g}s), "
                "or a publish waiting for its replicas would be cut off as a failed call"
            )
        if self.database_url is not None and not re.match(r"postgres(ql)?://", self.database_url):
            raise SettingsError(
                f"{ENV_PREFIX}DATABASE_URL: must start with postgresql:// (or postgres://)"
            )
        if self.workers > 1 and self.redis_url is None:
            raise SettingsError(
                f"{ENV_PREFIX}WORKERS={self.workers} needs a shared engine: the embedded memory "
                f"engine keeps events in one process. Run one worker, or set {ENV_PREFIX}REDIS_URL"
            )
        if self.signing_key is not None and self.signing_key_file is not None:
            raise SettingsError(
                f"{ENV_PREFIX}SIGNING_KEY and {ENV_PREFIX}SIGNING_KEY_FILE are exclusive: set one"
            )
        if (self.bootstrap_client_id is None) != (self.bootstrap_client_secret is None):
            raise SettingsError(
                f"{ENV_PREFIX}BOOTSTRAP_CLIENT_ID and {ENV_PREFIX}BOOTSTRAP_CLIENT_SECRET "
                "go together: set both or neither"
            )
        if (self.bootstrap_username is None) != (self.bootstrap_password is None):
            raise SettingsError(
                f"{ENV_PREFIX}BOOTSTRAP_USERNAME and {ENV_PREFIX}BOOTSTRAP_PASSWORD "
                "go together: set both or neither"
            )
        if self.operator_key is not None and len(self.operator_key) < 24:
            raise SettingsError(f"{ENV_PREFIX}OPERATOR_KEY: at least 24 characters")
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", self.bootstrap_tenant):
            raise SettingsError(
                f"{ENV_PREFIX}BOOTSTRAP_TENANT: 1-64 letters, digits, '_' or '-', "
                f"got {self.bootstrap_tenant!r}"
            )
        if "*" in self.cors_origins and len(self.cors_origins) > 1:
            raise SettingsError(
                f"{ENV_PREFIX}CORS_ALLOWED_ORIGINS: * stands alone (any origin, no credentials); "
                "list origins without it to allow credentials"
            )

    @property
    def cors_origins(self) -> list[str]:
        return [origin.strip() for origin in self.cors_allowed_origins.split(",") if origin.strip()]

    def replace(self, **changes: Any) -> Settings:
        updated = dataclasses.replace(self, **changes)
        updated.validate()
        return updated


def describe_settings() -> list[tuple[str, str, str]]:
    """(environment variable, default, description) for every setting, in declaration order."""
    rows = []
    for spec in dataclasses.fields(Settings):
        default = spec.default
        shown = (
            "—"
            if default is None
            else str(default).lower()
            if isinstance(default, bool)
            else str(default)
        )
        rows.append((ENV_PREFIX + spec.name.upper(), shown, spec.metadata["doc"]))
    return rows
