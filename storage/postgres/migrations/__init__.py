"""Forward-only SQL migrations: `NNNN_name.sql` files applied in order, each in a transaction,
recorded in `schema_migrations`. The server refuses to start while any is pending."""

from __future__ import annotations

from importlib import resources

import asyncpg

from app.errors import CatalogUnavailable
from storage.failures import describe

__all__ = ["apply_migrations", "migrate", "migration_names", "pending_migrations"]

_LOCK = 0x7265706C61796275  # "replaybu": this database's migration lock

_TRACKING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name        text PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


def migration_names() -> list[str]:
    folder = resources.files("storage.postgres.migrations")
    return sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".sql"))


async def _applied(connection: asyncpg.Connection) -> set[str]:
    await connection.execute(_TRACKING)
    rows = await connection.fetch("SELECT name FROM schema_migrations")
    return {row["name"] for row in rows}


async def pending_migrations(connection: asyncpg.Connection) -> list[str]:
    applied = await _applied(connection)
    return [name for name in migration_names() if name not in applied]


async def apply_migrations(connection: asyncpg.Connection) -> list[str]:
    """Apply every pending migration, in order; returns their names. Safe to run again, and
    at once from several places (nodes starting together): one applies, the others wait for
    it under an advisory lock and find nothing pending."""
    folder = resources.files("storage.postgres.migrations")
    applied = []
    await connection.execute("SELECT pg_advisory_lock($1)", _LOCK)
    try:
        for name in await pending_migrations(connection):
            async with connection.transaction():
                await connection.execute(folder.joinpath(name).read_text())
                await connection.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
            applied.append(name)
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", _LOCK)
    return applied


async def migrate(url: str, *, connect_timeout: float, command_timeout: float) -> list[str]:
    """Connect to the catalog database at `url` and `apply_migrations`; every step is bounded
    (connecting by `connect_timeout`, each statement, the lock wait included, by
    `command_timeout`). Raises CatalogUnavailable saying what failed."""
    try:
        connection = await asyncpg.connect(
            url, timeout=connect_timeout, command_timeout=command_timeout
        )
        try:
            return await apply_migrations(connection)
        finally:
            await connection.close(timeout=command_timeout)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:  # timeouts too
        raise CatalogUnavailable(f"the catalog database failed: {describe(error)}") from None
