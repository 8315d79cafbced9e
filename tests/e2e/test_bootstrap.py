"""Start-up credentials on a PostgreSQL catalog: created only when asked for and only if absent,
so a restart never undoes an operator's revocation or rotation; a production start prints no
secret and creates nothing it was not asked for. (The dev defaults' printed credential is
`test_lifecycle.py`'s.)"""

from __future__ import annotations

import httpx

from tests.e2e.server import RunningServer, fresh_catalog_database, run_server
from tests.harness.postgres import RunningPostgres

OPERATOR_KEY = "bootstrap-operator-key-0123456789"
OPERATOR = {"Authorization": f"Bearer {OPERATOR_KEY}"}
USER, PASSWORD = "boot@example.test", "first password"


def _catalog(postgres: RunningPostgres) -> dict[str, str]:
    return {
        "REPLAYBUS_DATABASE_URL": fresh_catalog_database(postgres, "bootstrap"),
        "REPLAYBUS_OPERATOR_KEY": OPERATOR_KEY,
    }


def _admin(server: RunningServer, path: str) -> httpx.Response:
    response = httpx.post(f"{server.base_url}/v1/admin{path}", headers=OPERATOR)
    assert response.status_code == 200, response.text
    return response


def _count(postgres: RunningPostgres, url: str, table: str) -> int:
    return int(postgres.query(f"SELECT count(*) FROM {table}", url.rsplit("/", 1)[1]))


def test_a_restart_keeps_the_bootstrap_client_revoked(postgres_server: RunningPostgres) -> None:
    env = _catalog(postgres_server)
    with run_server(env) as first:
        granted = first.token_response()
        _admin(first, f"/tenants/default/clients/{first.client_id}/revoke")

    with run_server(env) as restarted:
        refused = restarted.token_response()
        shown = httpx.get(
            f"{restarted.base_url}/v1/admin/tenants/default/clients/{restarted.client_id}",
            headers=OPERATOR,
        )

    assert granted.status_code == 200, granted.text
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == "invalid_client"
    assert shown.json()["revoked"] is True


def test_a_restart_keeps_a_rotated_secret(postgres_server: RunningPostgres) -> None:
    env = _catalog(postgres_server)
    with run_server(env) as first:
        rotated = _admin(first, f"/tenants/default/clients/{first.client_id}/rotate")
    new_secret = rotated.json()["clientSecret"]

    with run_server(env) as restarted:
        configured_secret = restarted.token_response()
        rotated_secret = restarted.token_response(client_secret=new_secret)

    assert configured_secret.status_code == 400, configured_secret.text
    assert rotated_secret.status_code == 200, rotated_secret.text


def test_a_restart_with_other_bootstrap_secrets_changes_nothing(
    postgres_server: RunningPostgres,
) -> None:
    env = {
        **_catalog(postgres_server),
        "REPLAYBUS_BOOTSTRAP_USERNAME": USER,
        "REPLAYBUS_BOOTSTRAP_PASSWORD": PASSWORD,
    }
    with run_server(env) as first:
        first_secret = first.client_secret

    changed = {**env, "REPLAYBUS_BOOTSTRAP_PASSWORD": "second password"}
    with run_server(changed, client_secret="another-secret-0123456789") as restarted:
        old_client_secret = restarted.token_response(client_secret=first_secret)
        new_client_secret = restarted.token_response()
        password_form = {
            "grant_type": "password",
            "client_id": restarted.client_id,
            "client_secret": first_secret,
            "username": USER,
        }
        url = restarted.base_url + "/services/oauth2/token"
        old_password = httpx.post(url, data={**password_form, "password": PASSWORD})
        new_password = httpx.post(url, data={**password_form, "password": "second password"})

    assert old_client_secret.status_code == 200, old_client_secret.text
    assert new_client_secret.status_code == 400, new_client_secret.text
    assert old_password.status_code == 200, old_password.text
    assert new_password.status_code == 400, new_password.text


def test_a_production_start_prints_no_secret_and_creates_no_credential(
    postgres_server: RunningPostgres,
) -> None:
    catalog = fresh_catalog_database(postgres_server, "bootstrap")
    env = {
        "REPLAYBUS_DATABASE_URL": catalog,
        "REPLAYBUS_BOOTSTRAP_CLIENT_ID": "",
        "REPLAYBUS_BOOTSTRAP_CLIENT_SECRET": "",
    }
    with run_server(env) as server:
        admin = httpx.get(server.base_url + "/v1/admin/tenants", headers=OPERATOR)

    text = "\n".join(server.output)  # complete now that the server has stopped
    assert "client_secret" not in text
    assert "client_id" not in text
    assert "shown once" not in text
    assert "operator key:  not set" in text
    assert "replaybus clients create" in text  # where credentials come from instead
    assert _count(postgres_server, catalog, "oauth_clients") == 0
    assert _count(postgres_server, catalog, "tenants") == 0
    assert admin.status_code == 401  # no operator key was generated either
