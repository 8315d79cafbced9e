"""The operations guide's shell blocks, run as written (only the base URL and the catalog URL are
this test's) against real servers and a real PostgreSQL, and their effects checked."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx

from tests.e2e.server import RunningServer, fresh_catalog_database, run_server
from tests.harness.postgres import RunningPostgres

GUIDE = Path(__file__).parents[2] / "docs" / "operations.md"
GUIDE_URL = "export REPLAYBUS_URL=http://127.0.0.1:8080"
OPERATOR_KEY = "ops-guide-operator-key-0123456789"
OPERATOR = {"Authorization": f"Bearer {OPERATOR_KEY}"}


def _block(heading: str, starting: str) -> str:
    """The first `sh` block under `## heading` whose text starts with `starting`."""
    section = GUIDE.read_text().split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    for block in re.findall(r"```sh\n(.*?)```", section, re.DOTALL):
        if block.startswith(starting):
            return str(block)
    raise AssertionError(f"the operations guide lost its {heading!r} block ({starting!r})")


def _bash(script: str, environment: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The script under `bash -e`, the project's virtualenv first on PATH (`replaybus`)."""
    venv_bin = str(Path(sys.executable).parent)
    env = {**os.environ, **environment, "PATH": venv_bin + os.pathsep + os.environ["PATH"]}
    return subprocess.run(
        ["bash", "-e", "-c", script],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_checking_a_node_answers_health_readiness_and_metrics(
    server: RunningServer, tmp_path: Path
) -> None:
    script = _block("Checking a node", "export REPLAYBUS_URL=")
    assert script.startswith(GUIDE_URL + "\n")
    script = script.replace(GUIDE_URL, f"export REPLAYBUS_URL={server.base_url}", 1)

    result = _bash(script, {}, tmp_path)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == '{"status":"ok"}'
    assert lines[1].startswith('{"status":"ready"')
    assert {line.split(" ")[0] for line in lines[2:]} == {
        "replaybus_sse_streams",
        "replaybus_bayeux_held_connects",
    }


def test_migrate_then_backup_and_restore_the_catalog(
    postgres_server: RunningPostgres, tmp_path: Path
) -> None:
    catalog = fresh_catalog_database(postgres_server, "guide")
    environment = {"REPLAYBUS_DATABASE_URL": catalog}
    migrate = _bash(
        _block("Draining, upgrades and reconnect storms", "replaybus migrate"),
        environment,
        tmp_path,
    )
    assert migrate.returncode == 0, migrate.stderr
    assert "up to date" in migrate.stdout  # fresh_catalog_database applied them already
    backup, restore = _block("Backing up the catalog", "pg_dump").strip().splitlines()

    with run_server({**environment, "REPLAYBUS_OPERATOR_KEY": OPERATOR_KEY}) as node:
        tenant = f"{node.base_url}/v1/admin/tenants/backed-up"
        created = httpx.post(
            f"{node.base_url}/v1/admin/tenants", json={"tenantId": "backed-up"}, headers=OPERATOR
        )
        assert created.status_code == 201, created.text
        assert _bash(backup, environment, tmp_path).returncode == 0
        assert (tmp_path / "replaybus-catalog.dump").stat().st_size > 0
        assert httpx.delete(tenant, headers=OPERATOR).status_code == 200
        assert httpx.get(tenant, headers=OPERATOR).status_code == 404

        restored = _bash(restore, environment, tmp_path)

        assert restored.returncode == 0, restored.stderr
        answer = httpx.get(tenant, headers=OPERATOR)
        assert answer.status_code == 200, answer.text
        assert answer.json()["tenantId"] == "backed-up"
