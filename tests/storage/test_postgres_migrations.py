"""Migrations run from several places at once (pods starting together, each with its init
container) apply once: the others wait and find nothing pending."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from storage.postgres import apply_migrations
from storage.postgres.migrations import migration_names, pending_migrations
from tests.harness.postgres import RunningPostgres


async def test_concurrent_migrations_apply_each_migration_once(
    postgres_server: RunningPostgres,
) -> None:
    database = f"race_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(postgres_server.url())
    try:
        await admin.execute(f"CREATE DATABASE {database}")
    finally:
        await admin.close()
    connections = [await asyncpg.connect(postgres_server.url(database)) for _ in range(4)]
    try:
        results = await asyncio.gather(*(apply_migrations(c) for c in connections))

        assert sorted(results, key=len) == [[], [], [], migration_names()]
        assert await pending_migrations(connections[0]) == []
    finally:
        for connection in connections:
            await connection.close()
