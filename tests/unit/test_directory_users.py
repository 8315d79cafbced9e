"""The Directory caches users like clients: one catalog read per name per TTL, for names that
do not exist too, so the token endpoint's lookups cannot be turned into a catalog query each."""

from __future__ import annotations

from collections import Counter

from app.catalog import UserRecord
from app.directory import Directory
from storage.memory import MemoryCatalog
from tests.fakes import FakeClock

TTL = 5.0
MAX_STALE = 120.0
ADA = UserRecord("ada@example.test", "acme", "hash")


class CountingCatalog(MemoryCatalog):
    def __init__(self) -> None:
        super().__init__()
        self.user_reads: Counter[str] = Counter()

    async def user(self, username: str) -> UserRecord | None:
        self.user_reads[username] += 1
        return await super().user(username)


async def test_users_and_absent_users_are_read_once_per_ttl() -> None:
    catalog, clock = CountingCatalog(), FakeClock()
    await catalog.add_user(ADA)
    directory = Directory(catalog, clock, TTL, max_stale=MAX_STALE)

    found = [await directory.user(ADA.username) for _ in range(3)]
    absent = [await directory.user("ghost@example.test") for _ in range(3)]
    clock.advance(TTL + 1)
    again = await directory.user("ghost@example.test")

    assert found == [ADA] * 3
    assert absent == [None] * 3
    assert again is None
    assert catalog.user_reads == {ADA.username: 1, "ghost@example.test": 2}


async def test_forget_makes_the_next_user_read_fresh() -> None:
    catalog, clock = CountingCatalog(), FakeClock()
    directory = Directory(catalog, clock, TTL, max_stale=MAX_STALE)
    assert await directory.user(ADA.username) is None

    await catalog.add_user(ADA)
    directory.forget(user=ADA.username)

    assert await directory.user(ADA.username) == ADA
