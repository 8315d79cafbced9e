"""The README's administration walk-through, pasted as it is (but for the base URL) against a
real server whose catalog lives in PostgreSQL, and the effects it claims checked over HTTP."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.e2e.server import RunningServer, fresh_catalog_database, run_server
from tests.harness.postgres import RunningPostgres

README = Path(__file__).parents[2] / "README.md"
README_URL = "export REPLAYBUS_URL=http://127.0.0.1:8080"
README_KEY = "export REPLAYBUS_OPERATOR_KEY=dev-operator-key-0123456789"
OPERATOR_KEY = "dev-operator-key-0123456789"
OPERATOR = {"Authorization": f"Bearer {OPERATOR_KEY}"}


def _admin_script() -> str:
    text = README.read_text()
    after = text.split("## Tenants, clients, scopes and quotas", 1)[1]
    after = after.split("administration\nstep by step:", 1)[1]
    match = re.search(r"```sh\n(.*?)```", after, re.DOTALL)
    assert match is not None, "README lost its administration walk-through"
    return match.group(1)


def _until_step_3(script: str) -> str:
    """Steps 1 and 2 only: everything before the line that starts with `# 3.`."""
    parts = re.split(r"^# 3\..*$", script, maxsplit=1, flags=re.MULTILINE)
    assert len(parts) == 2, "the walk-through lost its step 3"
    return parts[0]


@contextmanager
def _server(postgres: RunningPostgres) -> Iterator[RunningServer]:
    env = {
        "REPLAYBUS_DATABASE_URL": fresh_catalog_database(postgres, "admin"),
        "REPLAYBUS_OPERATOR_KEY": OPERATOR_KEY,
    }
    with run_server(env) as server:
        yield server


def _run(script: str, server: RunningServer, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The script as a reader would run it, `replaybus` from the project's virtualenv, with
    only the URL line changed to this server's."""
    assert script.startswith(f"{README_URL}\n{README_KEY}\n")
    script = script.replace(README_URL, f"export REPLAYBUS_URL={server.base_url}", 1)
    venv_bin = Path(sys.executable).parent
    assert (venv_bin / "replaybus").exists()
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in ("REPLAYBUS_TOKEN", "REPLAYBUS_URL", "REPLAYBUS_OPERATOR_KEY")
    }
    environment["PATH"] = f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"
    return subprocess.run(
        ["bash", "-c", script],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _token(server: RunningServer, client_id: str, secret: str) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/v1/oauth/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    )


def test_the_readme_administration_walk_through_works_verbatim(
    postgres_server: RunningPostgres, tmp_path: Path
) -> None:
    script = _admin_script()
    with _server(postgres_server) as server:
        result = _run(script, server, tmp_path)
        tenant_after = httpx.get(f"{server.base_url}/v1/admin/tenants/acme", headers=OPERATOR)
        clients_after = httpx.get(
            f"{server.base_url}/v1/admin/tenants/acme/clients", headers=OPERATOR
        )
        tenants_after = httpx.get(f"{server.base_url}/v1/admin/tenants", headers=OPERATOR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    reader = json.loads((tmp_path / "reader.json").read_text())
    assert reader["clientId"] == "acme-reader"
    assert reader["tenantId"] == "acme"
    assert reader["scopes"] == ["subscribe"]
    assert isinstance(reader["clientSecret"], str)
    assert len(reader["clientSecret"]) >= 16
    assert "deleted tenant acme" in result.stdout
    assert tenant_after.status_code == 404
    assert tenant_after.json()["error"] == "not_found"
    assert clients_after.status_code == 404
    assert "acme" not in [t["tenantId"] for t in tenants_after.json()["tenants"]]


def test_the_walk_through_creates_working_clients_with_the_scopes_it_names(
    postgres_server: RunningPostgres, tmp_path: Path
) -> None:
    script = _until_step_3(_admin_script())
    with _server(postgres_server) as server:
        result = _run(script, server, tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        reader = json.loads((tmp_path / "reader.json").read_text())
        reader_token = _token(server, "acme-reader", reader["clientSecret"])
        # acme-orders' secret is shown once, on the terminal: where a reader would copy it.
        shown = re.findall(r"^client_secret: (\S+)", result.stdout, re.MULTILINE)
        assert len(shown) == 1, result.stdout
        orders_token = _token(server, "acme-orders", shown[0])
        assert orders_token.status_code == 200, orders_token.text
        headers = {"Authorization": f"Bearer {orders_token.json()['access_token']}"}
        invoice = httpx.post(
            f"{server.base_url}/v1/events/event/Invoice__e", json={"n": 1}, headers=headers
        )
        order = httpx.post(
            f"{server.base_url}/v1/events/event/Order_Placed__e", json={"n": 1}, headers=headers
        )
        tenant = httpx.get(f"{server.base_url}/v1/admin/tenants/acme", headers=OPERATOR)
    assert result.stderr == ""
    assert reader_token.status_code == 200, reader_token.text
    assert reader_token.json()["scope"] == "subscribe"
    assert orders_token.json()["scope"] == "publish:/event/Order*"
    assert invoice.status_code == 403, invoice.text
    assert invoice.json()["error"] == "insufficient_scope"
    assert order.status_code == 201, order.text
    assert tenant.json() == {
        "tenantId": "acme",
        "suspended": False,
        "settings": {
            "retentionMaxAge": 86400,
            "publishRate": 50,
            "publishBurst": 100,
            "maxSubscribers": 500,
            "maxEventSize": 65536,
        },
    }


def _schema_script() -> str:
    text = README.read_text()
    after = text.split("**Channel definitions and schemas.**", 1)[1]
    match = re.search(r"```sh\n(.*?)```", after, re.DOTALL)
    assert match is not None, "README lost its schema walk-through"
    return match.group(1)


def test_the_readme_schema_walk_through_works_verbatim(
    postgres_server: RunningPostgres, tmp_path: Path
) -> None:
    with _server(postgres_server) as server:
        result = _run(_schema_script(), server, tmp_path)
        shown = httpx.get(
            f"{server.base_url}/v1/admin/tenants/shop/channels/event/Order_Placed__e",
            headers=OPERATOR,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    # The refused change is reported on stderr with its reason; nothing else is.
    assert result.stderr.count("\n") == 1, result.stderr
    assert "409 incompatible_schema" in result.stderr
    assert "property 'currency' became required" in result.stderr
    assert "refused, as it should be" in result.stdout
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    refused, stored, schema = (json.loads(line) for line in lines[-3:])
    assert refused["error"] == "schema_violation"
    assert [v["path"] for v in refused["violations"]] == ["$", "$.amount", "$.orderId"]
    assert stored["replayId"] > 0
    assert schema["version"] == 2
    assert shown.json()["schema"]["schemaId"] == schema["schemaId"]
    assert [v["version"] for v in shown.json()["versions"]] == [1, 2]
    assert shown.json()["owner"] == "checkout"
