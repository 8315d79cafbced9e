"""The README tour, pasted as it is (but for the base URL) against a real server."""

from __future__ import annotations

import json
import re
import subprocess
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
    assert resumed.startswith("retry: 2000\n")
    assert _orders(resumed) == [4, 5]
