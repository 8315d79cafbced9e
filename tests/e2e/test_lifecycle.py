"""Start-up and shutdown of a real `replaybus serve` process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
from httpx_sse import aconnect_sse

from tests.e2e.server import run_server
from tests.e2e.sse import channel_name


async def test_sigterm_ends_open_streams_with_a_retry_hint_and_exits_cleanly() -> None:
    with run_server() as running:
        token = running.token()
        async with (
            httpx.AsyncClient(timeout=30) as client,
            aconnect_sse(
                client,
                "GET",
                f"{running.base_url}/v1/stream{channel_name()}",
                headers={"Authorization": f"Bearer {token}"},
            ) as source,
        ):
            messages = source.aiter_sse()
            opening = await anext(messages)
            assert opening.retry is not None
            assert 2000 <= opening.retry <= 7000  # the retry delay plus this stream's jitter
            running.process.send_signal(signal.SIGTERM)
            rest = [message async for message in messages]
        assert [message.retry for message in rest] == [opening.retry]
        # uvicorn re-raises the signal once its graceful shutdown is complete.
        assert running.process.wait(timeout=15) in (0, -signal.SIGTERM)


def test_serve_prints_a_generated_dev_credential_that_works() -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("REPLAYBUS_")}
    environment.update({"REPLAYBUS_PORT": "0", "REPLAYBUS_LOG_LEVEL": "warning"})
    process = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    lines: dict[str, str] = {}
    try:
        for line in process.stdout:
            key, _, value = line.strip().partition(":")
            if line.startswith("replaybus listening on"):
                lines["url"] = line.split()[-1]
            elif key in ("client_id", "client_secret"):
                lines[key] = value.split()[0]
            if len(lines) == 3:
                break
        response = httpx.post(
            lines["url"] + "/services/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "client_id": lines["client_id"],
                "client_secret": lines["client_secret"],
            },
        )
        assert response.status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
        process.stdout.close()


def test_invalid_setting_is_refused_naming_the_variable() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "api.cli", "serve"],
        env={**os.environ, "REPLAYBUS_RETENTION_MAX_AGE": "forever"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "REPLAYBUS_RETENTION_MAX_AGE" in result.stderr


def test_memory_engine_refuses_several_workers() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "api.cli", "serve", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "REPLAYBUS_WORKERS=2 needs a shared engine" in result.stderr
