"""Representative values for rendering helm/replaybus: how the chart is meant to be installed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "BUNDLED",
    "DEFAULTS",
    "EXTERNAL",
    "PRODUCTION",
    "PRODUCTION_FILE",
    "SIGNING_KEY",
    "VALUE_SETS",
]

# Only passed through to a Secret, never parsed: its shape is enough.
SIGNING_KEY = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEG\n-----END PRIVATE KEY-----\n"

# values.yaml alone: one pod, embedded engine and catalog.
DEFAULTS: dict[str, Any] = {}

# Everything optional on, secrets kept outside the chart, Redis and PostgreSQL without passwords:
# the example the chart ships and the operations guide renders.
PRODUCTION_FILE = Path(__file__).parents[2] / "helm" / "replaybus" / "examples" / "production.yaml"
PRODUCTION: dict[str, Any] = yaml.safe_load(PRODUCTION_FILE.read_text())

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
