"""Fixtures of the browser tests: Chromium, the Node packages, the page's origin and the
replaybus servers that allow it (CORS)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.harness import PageServer, page_server, require_chromium
from tests.e2e.bayeux_node import install_node_packages
from tests.e2e.server import RunningServer, run_server


@pytest.fixture(scope="session")
def chromium() -> Path:
    return require_chromium()


@pytest.fixture(scope="session")
def node_dir() -> Path:
    """tests/node with its pinned packages (CometD, playwright-core) installed by `npm ci`."""
    return install_node_packages()


@pytest.fixture(scope="session")
def pages() -> Iterator[PageServer]:
    with page_server() as running:
        yield running


@pytest.fixture(scope="session")
def browser_server(pages: PageServer) -> Iterator[RunningServer]:
    """Tokens live 10 s (the minimum), so a stream ends by itself within a test; streams
    suggest a 200 ms `retry:`, so the browser's own reconnect comes quickly."""
    env = {
        "REPLAYBUS_CORS_ALLOWED_ORIGINS": pages.origin,
        "REPLAYBUS_TOKEN_TTL": "10s",
        "REPLAYBUS_SSE_RETRY": "200ms",
    }
    with run_server(env) as running:
        yield running


@pytest.fixture(scope="session")
def small_window_server(pages: PageServer) -> Iterator[RunningServer]:
    """Each channel retains its newest 3 events."""
    env = {
        "REPLAYBUS_CORS_ALLOWED_ORIGINS": pages.origin,
        "REPLAYBUS_RETENTION_MAX_COUNT": "3",
    }
    with run_server(env) as running:
        yield running
