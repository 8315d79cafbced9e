"""The locust file, run headless for a few seconds against a real server: every user type
works, deliveries are measured, and the run stops by itself."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

from tests.e2e.server import CLIENT_ID, CLIENT_SECRET, run_server

LOCUSTFILE = Path(__file__).parents[2] / "loadtests" / "locustfile.py"


def test_a_short_headless_run_publishes_and_measures_delivery_over_both_transports(
    tmp_path: Path,
) -> None:
    with run_server({"REPLAYBUS_BAYEUX_TIMEOUT": "2s"}) as server:
        result = subprocess.run(
            [
                *(str(Path(sys.executable).parent / "locust"), "-f", str(LOCUSTFILE)),
                *("--headless", "-u", "11", "-r", "11", "-t", "8s", "--only-summary"),
                *("--host", server.base_url, "--csv", str(tmp_path / "run")),
            ],
            env={
                **os.environ,
                "REPLAYBUS_CLIENT_ID": CLIENT_ID,
                "REPLAYBUS_CLIENT_SECRET": CLIENT_SECRET,
                "LOAD_STREAM_SECONDS": "3",
            },
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=90,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    with (tmp_path / "run_stats.csv").open(newline="") as file:
        rows = {(row["Type"], row["Name"]): row for row in csv.DictReader(file)}
    for key in [
        ("POST", "publish"),
        ("DELIVER", "sse"),
        ("DELIVER", "bayeux"),
        ("GET", "sse stream"),
        ("POST", "bayeux connect"),
    ]:
        assert key in rows, sorted(rows)
        assert int(rows[key]["Request Count"]) > 0, key
        assert int(rows[key]["Failure Count"]) == 0, key
    published = int(rows[("POST", "publish")]["Request Count"])
    # Each of the 5 + 5 subscribers gets most events published while it is connected.
    assert int(rows[("DELIVER", "sse")]["Request Count"]) > published
    assert int(rows[("DELIVER", "bayeux")]["Request Count"]) > published
