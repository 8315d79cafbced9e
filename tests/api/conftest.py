"""A fresh in-process node per test (see `_support`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.api._support import Node, running_node


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    async with running_node() as running:
        yield running
