"""The catalog on PostgreSQL: migrations are required, applied by `replaybus migrate`
(idempotent), and the server then keeps tenants and clients in the database."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid

import httpx

from storage.postgres.migrations import migration_names
from tests.e2e.server import CLIENT_ID, run_server
from tests.harness.postgres import RunningPostgres


def _replaybus(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", command],
        env={**os.environ, "REPLAYBUS_PORT": "0", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_migrations_are_required_then_applied_once_and_the_catalog_lives_in_postgres(
    postgres_server: RunningPostgres,
) -> None:
    database = f"catalog_{uuid.uuid4().hex[:10]}"
    postgres_server.query(f"CREATE DATABASE {database}")
    env = {"REPLAYBUS_DATABASE_URL": postgres_server.url(database)}

    refused = _replaybus("serve", env)
    first = _replaybus("migrate", env)
    again = _replaybus("migrate", env)
    with run_server(env) as server:
        published = httpx.post(
            f"{server.base_url}/v1/events/event/Catalog__e",
            json={"n": 1},
            headers={"Authorization": f"Bearer {server.token()}"},
        )

    assert refused.returncode != 0
    assert "replaybus migrate" in refused.stdout + refused.stderr
    assert first.returncode == 0
    assert all(name in first.stdout for name in migration_names())
    assert "nothing (up to date)" in again.stdout
    assert published.status_code == 201, published.text
    stored = postgres_server.query(
        f"SELECT tenant_id FROM oauth_clients WHERE client_id = '{CLIENT_ID}'", database
    )
    assert stored == "default"


def test_migrate_gives_up_on_a_database_that_never_answers() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections, never answers
        port = silent.getsockname()[1]
        env = {
            "REPLAYBUS_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{port}/catalog",
            "REPLAYBUS_DATABASE_CONNECT_TIMEOUT": "1s",
        }
        migrated = _replaybus("migrate", env)

    assert migrated.returncode == 1
    assert "replaybus: migration failed: the catalog database failed: TimeoutError" in (
        migrated.stderr
    )
