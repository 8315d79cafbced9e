"""The README tour, pasted as it is (but for the base URL) against a real server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.e2e.server import run_server

README = Path(__file__).parents[2] / "README.md"


def _tour_script() -> str:
    text = README.read_text()
    after = text.split("In a second terminal:", 1)[1]
    match = re.search(r"```sh\n(.*?)```", after, re.DOTALL)
    assert match is not None, "README lost its tour"
    return match.group(1)


def _orders(sse_text: str) -> list[int]:
    return [
        json.loads(line.removeprefix("data: "))["payload"]["orderId"]
        for line in sse_text.splitlines()
        if line.startswith("data: ")
    ]


def test_readme_tour_works_verbatim(tmp_path: Path) -> None:
    script = _tour_script()
    assert script.startswith("BASE=http://127.0.0.1:8080\n")
    credentials = {
        "REPLAYBUS_BOOTSTRAP_CLIENT_ID": "demo",
        "REPLAYBUS_BOOTSTRAP_CLIENT_SECRET": "demo-secret",
    }
    with run_server(credentials) as server:
        script = script.replace("BASE=http://127.0.0.1:8080", f"BASE={server.base_url}", 1)
        result = subprocess.run(
            ["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
    assert result.stderr == ""
    assert _orders((tmp_path / "stream.txt").read_text()) == [1, 2, 3]
    resumed = (tmp_path / "resumed.txt").read_text()
    retry = int(resumed.split("\n", 1)[0].removeprefix("retry: "))
    assert 2000 <= retry <= 7000  # REPLAYBUS_SSE_RETRY plus up to REPLAYBUS_RECONNECT_JITTER
    assert _orders(resumed) == [4, 5]


def _command_line_script() -> str:
    text = README.read_text()
    after = text.split("## Client library and command line", 1)[1]
    match = re.search(r"```sh\n(.*?)```", after, re.DOTALL)
    assert match is not None, "README lost its command-line example"
    return match.group(1)


def test_readme_command_line_example_works_verbatim(tmp_path: Path) -> None:
    script = _command_line_script()
    url_line = "export REPLAYBUS_URL=http://127.0.0.1:8080"
    assert script.startswith(url_line + "\n")
    credentials = {
        "REPLAYBUS_BOOTSTRAP_CLIENT_ID": "demo",
        "REPLAYBUS_BOOTSTRAP_CLIENT_SECRET": "demo-secret",
    }
    venv_bin = Path(sys.executable).parent
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("REPLAYBUS_")},
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    with run_server(credentials) as server:
        script = script.replace(url_line, f"export REPLAYBUS_URL={server.base_url}", 1)
        result = subprocess.run(
            ["bash", "-c", "set -e\n" + script],
            cwd=tmp_path,
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "token.txt").read_text().count(".") == 2  # a JWT
    assert re.fullmatch(r"published 999 events \(\d+/s\)", result.stderr.strip()), result.stderr
    lines = result.stdout.strip().splitlines()
    replay_id = int(lines[0])
    pretty, as_json = lines[1:4], [json.loads(line) for line in lines[4:]]
    assert len(pretty) == 3
    assert all('{"orderId": ' in line for line in pretty)
    assert str(replay_id) in pretty[0]
    assert [event["payload"]["orderId"] for event in as_json] == [1, 2]
    assert as_json[0]["replayId"] == replay_id
