"""CORS: credentials only with an explicit origin allow-list, never with `*`."""

from __future__ import annotations

import pytest

from app.settings import Settings, SettingsError
from tests.api._support import running_node

PAGE = "https://app.example.test"
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization",
}


async def test_any_origin_gets_no_credentials() -> None:
    async with running_node(cors_allowed_origins="*") as node:
        preflight = await node.http.options(
            "/cometd/58.0", headers={"Origin": "https://anyone.test", **PREFLIGHT}
        )
        simple = await node.http.get(
            "/healthz", headers={"Origin": "https://anyone.test", "Cookie": "session=1"}
        )

    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in preflight.headers
    assert simple.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in simple.headers


async def test_listed_origins_get_credentials() -> None:
    async with running_node(cors_allowed_origins=f"{PAGE}, https://other.test") as node:
        preflight = await node.http.options("/cometd/58.0", headers={"Origin": PAGE, **PREFLIGHT})
        simple = await node.http.get("/healthz", headers={"Origin": PAGE})
        elsewhere = await node.http.options(
            "/cometd/58.0", headers={"Origin": "https://anyone.test", **PREFLIGHT}
        )

    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == PAGE
    assert preflight.headers["access-control-allow-credentials"] == "true"
    assert simple.headers["access-control-allow-origin"] == PAGE
    assert simple.headers["access-control-allow-credentials"] == "true"
    assert elsewhere.status_code == 400
    assert "access-control-allow-origin" not in elsewhere.headers


def test_a_wildcard_mixed_with_origins_is_refused_naming_the_setting() -> None:
    with pytest.raises(SettingsError, match=r"^REPLAYBUS_CORS_ALLOWED_ORIGINS: \* stands alone"):
        Settings.from_env({"REPLAYBUS_CORS_ALLOWED_ORIGINS": f"*, {PAGE}"})
