"""Starting real `replaybus serve` processes on free loopback ports."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx

from tests.harness.postgres import RunningPostgres

_LISTENING = re.compile(r"replaybus listening on (http://\S+)")
CLIENT_ID = "e2e-client"
CLIENT_SECRET = "e2e-secret-0123456789"
#: Short Redis bounds for tests that break Redis: a fault is noticed within about two seconds
#: (a silent connection by its pings), not after the production defaults.
REDIS_FAULT_TIMEOUTS = {
    "REPLAYBUS_REDIS_CONNECT_TIMEOUT": "500ms",
    "REPLAYBUS_REDIS_COMMAND_TIMEOUT": "1s",
    "REPLAYBUS_REDIS_POOL_TIMEOUT": "1s",
    "REPLAYBUS_REDIS_HEALTH_CHECK_INTERVAL": "500ms",
    "REPLAYBUS_READY_TIMEOUT": "1s",
}


@dataclass(frozen=True)
class RunningServer:
    base_url: str
    client_id: str
    client_secret: str
    process: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)

    async def wait_for_held_connects(self, count: int) -> None:
        """Until the node reports `count` held Bayeux connects (polling its /readyz)."""
        async with httpx.AsyncClient() as probe, asyncio.timeout(10):
            for _ in range(1000):
                ready = (await probe.get(self.base_url + "/readyz")).json()
                if ready.get("heldConnects") == count:
                    return
                await asyncio.sleep(0.01)  # another process's state: nothing to await but it
        raise AssertionError(f"{self.base_url} never held {count} connect(s)")

    def token_response(self, **fields: str) -> httpx.Response:
        """`POST /services/oauth2/token` as this server's client: the client credentials
        grant, or whatever `fields` add or override (another grant, secret or scope)."""
        form = {
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            **fields,
        }
        return httpx.post(f"{self.base_url}/services/oauth2/token", data=form)

    def token(self, scope: str | None = None) -> str:
        response = self.token_response(**({} if scope is None else {"scope": scope}))
        response.raise_for_status()
        token: str = response.json()["access_token"]
        return token


@contextmanager
def run_server(
    env: Mapping[str, str] | None = None,
    *arguments: str,
    client_id: str = CLIENT_ID,
    client_secret: str = CLIENT_SECRET,
) -> Iterator[RunningServer]:
    """A `replaybus serve [arguments]` process on a free port; its output is read until it says
    it listens, then collected line by line in `RunningServer.output` (complete once the block
    has left).

    Stopped with SIGTERM on exit (SIGKILL if it does not stop within 15 s)."""
    environment = {
        **os.environ,
        "REPLAYBUS_PORT": "0",
        "REPLAYBUS_BOOTSTRAP_CLIENT_ID": client_id,
        "REPLAYBUS_BOOTSTRAP_CLIENT_SECRET": client_secret,
        "REPLAYBUS_ACCESS_LOG": "false",
        "REPLAYBUS_LOG_LEVEL": "warning",
        **(env or {}),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", *arguments],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    output: list[str] = []
    base_url = None
    for line in process.stdout:
        output.append(line.rstrip("\n"))
        match = _LISTENING.search(line)
        if match:
            base_url = match.group(1)
            break
    if base_url is None:
        process.wait(timeout=15)
        process.stdout.close()
        raise RuntimeError("replaybus did not start:\n" + "\n".join(output))
    stdout = process.stdout

    def collect() -> None:
        # Keeps reading, so a chatty server never blocks on a full pipe.
        for line in stdout:
            output.append(line.rstrip("\n"))

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    try:
        yield RunningServer(base_url, client_id, client_secret, process, output)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        reader.join(timeout=5)
        stdout.close()


@dataclass(frozen=True)
class TenantClient:
    """A client of a tenant made through the admin API, with an access token of it."""

    tenant: str
    client_id: str
    client_secret: str
    token: str

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def client_of(base_url: str, operator_key: str, tenant: str, scopes: Sequence[str]) -> TenantClient:
    """A new client of the existing `tenant` with `scopes`, made with the operator key, and a
    client-credentials token of it."""
    issued = httpx.post(
        f"{base_url}/v1/admin/tenants/{tenant}/clients",
        json={"scopes": list(scopes)},
        headers={"Authorization": f"Bearer {operator_key}"},
        timeout=30,
    )
    assert issued.status_code == 201, issued.text
    client_id, secret = issued.json()["clientId"], issued.json()["clientSecret"]
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    granted = httpx.post(f"{base_url}/v1/oauth/token", data=form, timeout=30)
    assert granted.status_code == 200, granted.text
    return TenantClient(tenant, client_id, secret, str(granted.json()["access_token"]))


def tenant_with_client(
    base_url: str, operator_key: str, scopes: Sequence[str], tenant: str | None = None
) -> TenantClient:
    """A new tenant (`tenant`, default a fresh id) with one client of `scopes` and its token,
    made through the admin API with the operator key."""
    tenant = tenant or f"t{uuid.uuid4().hex[:10]}"
    created = httpx.post(
        f"{base_url}/v1/admin/tenants",
        json={"tenantId": tenant},
        headers={"Authorization": f"Bearer {operator_key}"},
        timeout=30,
    )
    assert created.status_code == 201, created.text
    return client_of(base_url, operator_key, tenant, scopes)


def fresh_catalog_database(postgres: RunningPostgres, prefix: str = "catalog") -> str:
    """A new database on `postgres`, migrated with `replaybus migrate`; its URL."""
    database = f"{prefix}_{uuid.uuid4().hex[:10]}"
    postgres.query(f"CREATE DATABASE {database}")
    url = postgres.url(database)
    subprocess.run(
        [sys.executable, "-m", "api.cli", "migrate"],
        env={**os.environ, "REPLAYBUS_DATABASE_URL": url},
        check=True,
        capture_output=True,
        timeout=60,
    )
    return url
