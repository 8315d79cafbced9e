"""Start-up credentials seeded by processes starting together on one fresh PostgreSQL catalog:
each is created once (one client generation, whose tokens every process takes), and a change an
operator makes between one process's look and its write stands.

The race is set up, not hoped for: each process's catalog lets its writes through only when the
test says, after both processes have looked and found nothing."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from api.app import _bootstrap
from app.catalog import ClientRecord, UserRecord
from app.settings import Settings
from storage.postgres import PostgresCatalog
from tests.e2e.server import fresh_catalog_database
from tests.harness.postgres import RunningPostgres

CLIENT_ID, USERNAME = "boot-client", "boot@example.test"
SETTINGS = {
    "bootstrap_client_id": CLIENT_ID,
    "bootstrap_client_secret": "boot-secret-0123456789",
    "bootstrap_username": USERNAME,
    "bootstrap_password": "boot password",
}
BOUND_S = 30.0  # a safety net for a start-up that never ends, far above any real one


class PausedCatalog(PostgresCatalog):
    """The real catalog, whose writes of clients and users wait for `may_write`; `looked` is
    set once the process has looked a client or user up."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.looked = asyncio.Event()
        self.may_write = asyncio.Event()

    async def client(self, client_id: str) -> ClientRecord | None:
        found = await super().client(client_id)
        self.looked.set()
        return found

    async def user(self, username: str) -> UserRecord | None:
        found = await super().user(username)
        self.looked.set()
        return found

    async def add_client(self, client: ClientRecord) -> None:
        await self.may_write.wait()
        await super().add_client(client)

    async def add_client_if_absent(self, client: ClientRecord) -> bool:
        await self.may_write.wait()
        return await super().add_client_if_absent(client)

    async def add_user(self, user: UserRecord) -> None:
        await self.may_write.wait()
        await super().add_user(user)

    async def add_user_if_absent(self, user: UserRecord) -> bool:
        await self.may_write.wait()
        return await super().add_user_if_absent(user)


Between = Callable[[PostgresCatalog], Awaitable[None]]


async def _nothing(operator: PostgresCatalog) -> None:
    return None


@asynccontextmanager
async def _two_starts(
    postgres: RunningPostgres, between: Between, **settings: Any
) -> AsyncIterator[PostgresCatalog]:
    """Two start-ups on one fresh database that both look before either writes; the first
    finishes, then `between` runs (as the operator), then the second finishes. Yields the
    operator's catalog."""
    url = fresh_catalog_database(postgres, "bootrace")
    config = Settings(database_url=url, **settings)
    first, second = PausedCatalog(url), PausedCatalog(url)
    async with first, second, PostgresCatalog(url) as operator, asyncio.timeout(BOUND_S):
        starting = [asyncio.create_task(_bootstrap(catalog, config)) for catalog in (first, second)]
        await first.looked.wait()
        await second.looked.wait()
        first.may_write.set()
        await starting[0]
        await between(operator)
        second.may_write.set()
        await starting[1]
        yield operator


async def test_processes_starting_together_leave_one_client_generation(
    postgres_server: RunningPostgres,
) -> None:
    created: list[ClientRecord | None] = []

    async def look(operator: PostgresCatalog) -> None:
        created.append(await operator.client(CLIENT_ID))

    settings = {k: v for k, v in SETTINGS.items() if "client" in k}
    async with _two_starts(postgres_server, look, **settings) as operator:
        final = await operator.client(CLIENT_ID)

    [first] = created
    assert first is not None
    assert final == first  # the second start wrote nothing: the first's tokens stay valid


async def test_a_revocation_between_another_process_look_and_write_stands(
    postgres_server: RunningPostgres,
) -> None:
    async def revoke(operator: PostgresCatalog) -> None:
        client = await operator.client(CLIENT_ID)
        assert client is not None
        await operator.add_client(dataclasses.replace(client, revoked=True))

    settings = {k: v for k, v in SETTINGS.items() if "client" in k}
    async with _two_starts(postgres_server, revoke, **settings) as operator:
        final = await operator.client(CLIENT_ID)

    assert final is not None
    assert final.revoked is True


async def test_a_password_change_between_another_process_look_and_write_stands(
    postgres_server: RunningPostgres,
) -> None:
    async def change(operator: PostgresCatalog) -> None:
        user = await operator.user(USERNAME)
        assert user is not None
        await operator.add_user(dataclasses.replace(user, password_hash="changed"))

    settings = {k: v for k, v in SETTINGS.items() if "client" not in k}
    async with _two_starts(postgres_server, change, **settings) as operator:
        final = await operator.user(USERNAME)

    assert final is not None
    assert final.password_hash == "changed"
