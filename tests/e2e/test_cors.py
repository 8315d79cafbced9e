"""CORS for browser publishers and subscribers, on the Bayeux, SSE and REST endpoints."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.server import RunningServer, run_server

ALLOWED = "https://app.example.test"
PATHS = ["/cometd/58.0", "/v1/stream/event/X__e", "/v1/events/event/X__e", "/services/oauth2/token"]


@pytest.fixture(scope="module")
def cors_server() -> Iterator[RunningServer]:
    with run_server({"REPLAYBUS_CORS_ALLOWED_ORIGINS": f"{ALLOWED}, https://other.test"}) as server:
        yield server


@pytest.mark.parametrize("path", PATHS)
def test_preflight_from_an_allowed_origin_is_answered(
    cors_server: RunningServer, path: str
) -> None:
    response = httpx.options(
        cors_server.base_url + path,
        headers={
            "Origin": ALLOWED,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "authorization" in response.headers["access-control-allow-headers"].lower()


@pytest.mark.parametrize("path", PATHS)
def test_preflight_from_another_origin_is_refused(cors_server: RunningServer, path: str) -> None:
    response = httpx.options(
        cors_server.base_url + path,
        headers={"Origin": "https://evil.test", "Access-Control-Request-Method": "POST"},
    )
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


def test_simple_request_from_an_allowed_origin_carries_the_header(
    cors_server: RunningServer,
) -> None:
    response = httpx.post(
        cors_server.base_url + "/cometd/58.0",
        json=[{"channel": "/meta/handshake", "version": "1.0", "id": "1"}],
        headers={"Origin": ALLOWED, "Authorization": f"Bearer {cors_server.token()}"},
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert response.json()[0]["successful"] is True


def test_without_configured_origins_no_cors_headers_are_sent(server: RunningServer) -> None:
    response = httpx.get(server.base_url + "/healthz", headers={"Origin": ALLOWED})
    assert "access-control-allow-origin" not in response.headers
