"""Representative values for rendering helm/replaybus: how the chart is meant to be installed."""

from __future__ import annotations

from typing import Any

__all__ = ["BUNDLED", "DEFAULTS", "EXTERNAL", "PRODUCTION", "SIGNING_KEY", "VALUE_SETS"]

# Only passed through to a Secret, never parsed: its shape is enough.
SIGNING_KEY = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEG\n-----END PRIVATE KEY-----\n"

# values.yaml alone: one pod, embedded engine and catalog.
DEFAULTS: dict[str, Any] = {}

# Everything optional on, secrets kept outside the chart, Redis and PostgreSQL without passwords.
PRODUCTION: dict[str, Any] = {
    "replicaCount": 3,
    "existingSecret": "replaybus-prod",
    "config": {"REPLAYBUS_WORKERS": "4", "REPLAYBUS_LOG_LEVEL": "warning"},
    "redis": {"url": "redis://redis.data.svc:6379/0"},
    "postgresql": {"url": "postgresql://replaybus@postgres.data.svc/replaybus"},
    "ingress": {
        "enabled": True,
        "className": "nginx",
        "hosts": [{"host": "events.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]}],
        "tls": [{"secretName": "events-tls", "hosts": ["events.example.com"]}],
    },
    "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 12},
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
    "networkPolicy": {
        "ingressNamespaceSelector": {"kubernetes.io/metadata.name": "ingress-nginx"},
        "metricsNamespaceSelector": {"kubernetes.io/metadata.name": "monitoring"},
    },
}

# External Redis and PostgreSQL with passwords, so their URLs go in the chart's Secret.
EXTERNAL: dict[str, Any] = {
    "replicaCount": 2,
    # The URLs are secret, so the chart cannot read their ports: the NetworkPolicy needs them.
    "redis": {"port": 6380},
    "secrets": {
        "signingKey": SIGNING_KEY,
        "operatorKey": "operator-key-0123456789abcdef",
        "redisUrl": "rediss://:redis-password@redis.example.net:6380/2",
        "databaseUrl": "postgresql://replaybus:pg-password@pg.example.net:5432/replaybus",
        "bootstrapClientSecret": "ops-client-secret-0123456789",
    },
    "config": {
        "REPLAYBUS_WORKERS": "2",
        "REPLAYBUS_BOOTSTRAP_CLIENT_ID": "ops-client",
        "REPLAYBUS_PUBLIC_URL": "https://events.example.net",
    },
}

# Redis and PostgreSQL installed with the release (the chart's dependencies).
BUNDLED: dict[str, Any] = {
    "replicaCount": 2,
    "redis": {"enabled": True},
    "postgresql": {"enabled": True},
    "secrets": {"signingKey": SIGNING_KEY},
}

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": DEFAULTS,
    "production": PRODUCTION,
    "external": EXTERNAL,
    "bundled": BUNDLED,
}
