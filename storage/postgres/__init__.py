"""The control plane on PostgreSQL (asyncpg): tenants, OAuth clients, users."""

from storage.postgres.catalog import PostgresCatalog
from storage.postgres.migrations import apply_migrations, migrate, pending_migrations

__all__ = ["PostgresCatalog", "apply_migrations", "migrate", "pending_migrations"]
