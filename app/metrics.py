"""Prometheus metrics of one process, served at `/metrics`.

Labels are bounded: tenant, transport, and small fixed sets (result, reason); channel names
only when `REPLAYBUS_METRICS_CHANNEL_LABELS` is on. With several workers, prometheus-client's
multiprocess mode (`PROMETHEUS_MULTIPROC_DIR`, set by the supervisor) sums every worker's
values; gauges then add up the live workers' (`livesum`).
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client import multiprocess as multiprocess_metrics

from app.model import ChannelKey, Published

__all__ = ["CONTENT_TYPE", "MULTIPROCESS_DIR", "Metrics", "forget_process"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"

# `_created` series double the output and no alert uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]

_MAX_CHILDREN = 10_000
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


def forget_process(pid: int) -> None:
    """In multiprocess mode, drop a dead worker's live gauges (its counters still count)."""
    multiprocess_metrics.mark_process_dead(pid)  # type: ignore[no-untyped-call]


class Metrics:
    """Every metric the service records. Each process builds one (tests build one per app, in
    a registry of its own)."""

    def __init__(
        self, *, channel_labels: bool = False, multiprocess_dir: str | None = None
    ) -> None:
        """`multiprocess_dir`: the workers' shared folder (`PROMETHEUS_MULTIPROC_DIR`), whose
        sum `exposition` reports; None for a single process."""
        self.registry = CollectorRegistry(auto_describe=True)
        self._multiprocess_dir = multiprocess_dir
        self.channel_labels = channel_labels
        registry = self.registry
        event_labels = ["tenant", "transport", *(["channel"] if channel_labels else [])]
        self.published = Counter(
            "replaybus_events_published",
            "Events stored (duplicates by idempotency key not counted).",
            event_labels,
            registry=registry,
        )
        self.delivered = Counter(
            "replaybus_events_delivered",
            "Events written to subscribers, one per subscriber.",
            ["tenant", "transport"],
            registry=registry,
        )
        self.publish_seconds = Histogram(
            "replaybus_publish_duration_seconds",
            "Time the engine took to store a publish request's events.",
            ["transport"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.delivery_lag = Histogram(
            "replaybus_delivery_lag_seconds",
            "From an event's creation to its live write to a subscriber (per write, its newest "
            "event; SSE history writes are not observed).",
            ["transport"],
            buckets=_LAG_BUCKETS,
            registry=registry,
        )
        self.sse_streams = Gauge(
            "replaybus_sse_streams",
            "Open SSE streams.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.bayeux_sessions = Gauge(
            "replaybus_bayeux_sessions",
            "Bayeux clients whose last connect reached this process and whose next one is not "
            "overdue (within the connect timeout plus the reconnect window).",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.held_connects = Gauge(
            "replaybus_bayeux_held_connects",
            "Bayeux connects held open waiting for events.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.replay_reads = Counter(
            "replaybus_replay_reads",
            "History pages read for subscribers catching up (SSE, Bayeux, REST history).",
            ["transport"],
            registry=registry,
        )
        self.gaps = Counter(
            "replaybus_gaps_reported",
            "Gaps reported to subscribers: requested positions already out of retention.",
            ["transport"],
            registry=registry,
        )
        self.slow_consumers = Counter(
            "replaybus_slow_consumer_disconnects",
            "Subscribers cut off for falling behind or not reading.",
            ["transport", "reason"],
            registry=registry,
        )
        self.engine_errors = Counter(
            "replaybus_engine_errors",
            "Requests answered 503 because the event store was unavailable.",
            ["protocol"],
            registry=registry,
        )
        self.catalog_lookups = Counter(
            "replaybus_catalog_cache_lookups",
            "Tenant, client and channel lookups: hit (cached), miss (read), stale (catalog "
            "down, cached answer used).",
            ["result"],
            registry=registry,
        )
        self.admission_refused = Counter(
            "replaybus_admission_refused",
            "Replays and handshakes refused by this node's concurrency limit (503 / retry).",
            ["kind"],
            registry=registry,
        )
        self.credential_checks = Counter(
            "replaybus_credential_checks",
            "Client secret and password checks at the token endpoint: hashed (scrypt ran), "
            "cached (proven recently, or sharing a running check), unknown (no such client or "
            "user: refused unhashed).",
            ["result"],
            registry=registry,
        )
        self.token_refused = Counter(
            "replaybus_token_requests_refused",
            "Token-endpoint requests refused by this node's limits: address_limit and "
            "identity_limit (429), busy (503, every hashing place taken).",
            ["reason"],
            registry=registry,
        )
        self._bayeux_clients: dict[str, float] = {}
        # Labelled children by label values: `labels()` validates and locks on every call,
        # which shows on the publish and delivery paths.
        self._children: dict[tuple[object, ...], Any] = {}

    def _child(self, metric: Any, *values: str) -> Any:
        key = (metric, *values)
        child = self._children.get(key)
        if child is None:
            if len(self._children) >= _MAX_CHILDREN:
                self._children.clear()
            child = self._children[key] = metric.labels(*values)
        return child

    def record_publish(
        self, key: ChannelKey, transport: str, published: list[Published], seconds: float
    ) -> None:
        stored = sum(not ack.duplicate for ack in published)
        if stored:
            channel = [key.name] if self.channel_labels else []
            self._child(self.published, key.tenant, transport, *channel).inc(stored)
        self._child(self.publish_seconds, transport).observe(seconds)

    def record_delivery(
        self, tenant: str, transport: str, count: int, newest_created_us: int | None
    ) -> None:
        """`count` events written to one subscriber, the newest created at `newest_created_us`
        (None: a write of history, whose lag is not the delivery path's)."""
        self._child(self.delivered, tenant, transport).inc(count)
        if newest_created_us is not None:
            lag = time.time() - newest_created_us / 1_000_000
            self._child(self.delivery_lag, transport).observe(max(0.0, lag))

    def catalog_lookup(self, result: str) -> None:
        self._child(self.catalog_lookups, result).inc()

    def bayeux_client_seen(self, client_id: str, window_s: float) -> None:
        """Count a Bayeux client as active here until `window_s` after its last connect."""
        now = time.monotonic()
        self._bayeux_clients[client_id] = now + window_s
        if len(self._bayeux_clients) % 256 == 0:
            self._forget_expired(now)
        self.bayeux_sessions.set(len(self._bayeux_clients))

    def bayeux_client_gone(self, client_id: str) -> None:
        self._bayeux_clients.pop(client_id, None)
        self.bayeux_sessions.set(len(self._bayeux_clients))

    def _forget_expired(self, now: float) -> None:
        expired = [client for client, until in self._bayeux_clients.items() if until < now]
        for client in expired:
            del self._bayeux_clients[client]

    def exposition(self) -> bytes:
        """The text format of this process's metrics, or of every worker's in multiprocess
        mode."""
        self._forget_expired(time.monotonic())
        self.bayeux_sessions.set(len(self._bayeux_clients))
        if self._multiprocess_dir:
            combined = CollectorRegistry()
            multiprocess_metrics.MultiProcessCollector(  # type: ignore[no-untyped-call]
                combined, path=self._multiprocess_dir
            )
            return generate_latest(combined)
        return generate_latest(self.registry)
