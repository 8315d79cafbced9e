"""Readiness follows the node's lifecycle (in process; no streaming involved)."""

from __future__ import annotations

import httpx

from api.app import create_app
from api.services import Lifecycle
from app.settings import Settings


async def test_readiness_fails_while_draining_and_new_streams_are_refused() -> None:
    lifecycle = Lifecycle()
    settings = Settings(bootstrap_client_id="c", bootstrap_client_secret="s", access_log=False)
    app = create_app(settings, lifecycle=lifecycle)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client,
    ):
        assert (await client.get("/readyz")).status_code == 200
        form = {"grant_type": "client_credentials", "client_id": "c", "client_secret": "s"}
        token = (await client.post("/v1/oauth/token", data=form)).json()["access_token"]
        lifecycle.draining.set()
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["error"] == "draining"
        refused = await client.get(
            "/v1/stream/event/X", headers={"Authorization": f"Bearer {token}"}
        )
        assert refused.status_code == 503
        assert refused.json()["error"] == "draining"
        assert (await client.get("/healthz")).status_code == 200
