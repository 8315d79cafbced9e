"""The PostgreSQL catalog's start-up when the database has migrations pending and then stops
answering: start-up fails with the domain error naming the migrations, and the pool is torn
down within the command timeout instead of waiting for a goodbye the database never sends."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from app.errors import CatalogUnavailable
from storage.postgres import PostgresCatalog
from tests.harness.postgres import RunningPostgres
from tests.harness.tcp_proxy import tcp_proxy


async def _fresh_database(server: RunningPostgres) -> str:
    name = f"pending_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server.url())
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    return name


async def test_pending_migrations_fail_start_up_even_when_the_database_then_goes_silent(
    postgres_server: RunningPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = await _fresh_database(postgres_server)
    with tcp_proxy(postgres_server.port) as proxy:
        real_release = asyncpg.pool.Pool.release

        async def release_then_silence(pool: Any, connection: Any, **options: Any) -> None:
            await real_release(pool, connection, **options)
            proxy.silence()  # the database stops answering once the migrations were checked

        monkeypatch.setattr(asyncpg.pool.Pool, "release", release_then_silence)
        url = f"postgresql://postgres@127.0.0.1:{proxy.port}/{database}"

        with pytest.raises(CatalogUnavailable, match="needs migrations 0001"):
            async with PostgresCatalog(url, command_timeout=0.5):
                pass
        proxy.restore()
