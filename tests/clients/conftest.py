"""Real `replaybus serve` processes for the Python client's tests (clients/python)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.clients.support import OPERATOR_KEY
from tests.e2e.server import RunningServer, run_server

WINDOW = 3  # REPLAYBUS_RETENTION_MAX_COUNT of the `small_window` server


@pytest.fixture(scope="session")
def server() -> Iterator[RunningServer]:
    """One server on embedded defaults with a known operator key; every test uses its own
    channel (tests.e2e.sse.channel_name) or its own tenant."""
    with run_server({"REPLAYBUS_OPERATOR_KEY": OPERATOR_KEY}) as running:
        yield running


@pytest.fixture(scope="session")
def small_window() -> Iterator[RunningServer]:
    """A server keeping only the newest WINDOW events per channel, to provoke gaps."""
    with run_server({"REPLAYBUS_RETENTION_MAX_COUNT": str(WINDOW)}) as running:
        yield running
