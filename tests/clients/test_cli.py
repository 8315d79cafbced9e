"""`replaybus token | publish | tail` (replaybus_client.cli) run as the installed command, as a
user runs it: credentials in REPLAYBUS_URL / REPLAYBUS_CLIENT_ID / REPLAYBUS_CLIENT_SECRET,
against a real server. What they print is checked against what the server stored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.clients.conftest import WINDOW
from tests.clients.support import answer_losing_proxy, history, port_of, publish_direct, wait_until
from tests.e2e.server import RunningServer
from tests.e2e.sse import channel_name

REPLAYBUS = str(Path(sys.executable).with_name("replaybus"))


def _environment(server: RunningServer | None, url: str | None = None) -> dict[str, str]:
    """The caller's environment without any REPLAYBUS_* setting, plus the server's."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("REPLAYBUS_")}
    if server is not None:
        environment["REPLAYBUS_URL"] = url or server.base_url
        environment["REPLAYBUS_CLIENT_ID"] = server.client_id
        environment["REPLAYBUS_CLIENT_SECRET"] = server.client_secret
    return environment


def _replaybus(
    environment: dict[str, str], *arguments: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [REPLAYBUS, *arguments],
        env=environment,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_token_prints_a_token_that_works(server: RunningServer) -> None:
    result = _replaybus(_environment(server), "token")
    assert result.returncode == 0, result.stderr
    [token] = _lines(result.stdout)
    channel = channel_name()
    headers = {"Authorization": f"Bearer {token}"}
    published = httpx.post(f"{server.base_url}/v1/events{channel}", json={}, headers=headers)
    assert published.status_code == 201, published.text
    window = httpx.get(f"{server.base_url}/v1/channels{channel}", headers=headers)
    assert window.status_code == 200, window.text


def test_publish_one_event_prints_its_replay_id(server: RunningServer) -> None:
    channel = channel_name()
    result = _replaybus(_environment(server), "publish", channel, '{"a":1}')
    assert result.returncode == 0, result.stderr
    [printed] = _lines(result.stdout)
    [stored] = history(server, channel)
    assert int(printed) == stored["replayId"]
    assert stored["payload"] == {"a": 1}


def test_publish_from_stdin_stores_every_line_in_order_in_batches(server: RunningServer) -> None:
    channel = channel_name()
    count = 1200
    lines = "".join(json.dumps({"n": n}) + "\n" for n in range(count))
    with answer_losing_proxy(port_of(server)) as proxy:  # counts the publish requests
        url = f"http://127.0.0.1:{proxy.port}"
        result = _replaybus(_environment(server, url), "publish", channel, stdin=lines)
        requests = proxy.event_posts
    assert result.returncode == 0, result.stderr
    stored = history(server, channel)
    assert [e["payload"] for e in stored] == [{"n": n} for n in range(count)]
    assert 1 < requests <= 10, f"{requests} publish requests for {count} lines"
    assert _lines(result.stderr)[-1].startswith(f"published {count} events"), result.stderr


def test_publish_names_the_malformed_line_and_fails(server: RunningServer) -> None:
    channel = channel_name()
    lines = '{"n": 1}\n{"n": 2}\n{"n": 3,\n{"n": 4}\n'
    result = _replaybus(_environment(server), "publish", channel, stdin=lines)
    assert result.returncode != 0
    assert "line 3" in result.stderr, result.stderr


def _tail_json(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in _lines(result.stdout)]


def test_tail_from_all_retained_prints_the_first_events_as_json(server: RunningServer) -> None:
    channel = channel_name()
    publish_direct(server, channel, [{"n": n} for n in range(8)])
    result = _replaybus(
        _environment(server), "tail", channel, "--from", "-2", "--count", "5", "--json"
    )
    printed = _tail_json(result)
    stored = history(server, channel)
    assert [p["replayId"] for p in printed] == [e["replayId"] for e in stored[:5]]
    assert [p["replayId"] for p in printed] == sorted({p["replayId"] for p in printed})
    assert [p["payload"] for p in printed] == [{"n": n} for n in range(5)]


def _iso(microseconds: int) -> str:
    moment = datetime.fromtimestamp(microseconds / 1_000_000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _microseconds(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1_000_000)


def _a_moment_after(acks: list[dict[str, Any]]) -> int:
    """A time strictly after the acknowledged events' createdDate, in microseconds: on a whole
    millisecond (as an ISO time shows it), at least one past their createdDate and past their
    ReplayIds (microseconds since the epoch, or just above after a burst)."""
    after = max(_microseconds(acks[-1]["createdDate"]) + 1000, acks[-1]["replayId"] + 1)
    moment: int = -(-after // 1000) * 1000
    wait_until(lambda: time.time() * 1_000_000 > moment + 1000, "the clock to pass that time")
    return moment


def test_tail_from_a_time_prints_only_what_was_published_after_it(server: RunningServer) -> None:
    """Batch A, a time T strictly after A's createdDate, then (the clock past T) batch B:
    `tail --from T` must print exactly B."""
    channel = channel_name()
    a = publish_direct(server, channel, [{"batch": "A", "n": n} for n in range(3)])
    moment = _a_moment_after(a)
    b = publish_direct(server, channel, [{"batch": "B", "n": n} for n in range(3)])
    assert a[-1]["createdDate"] < _iso(moment) < b[0]["createdDate"]
    result = _replaybus(
        _environment(server), "tail", channel, "--from", _iso(moment), "--count", "3", "--json"
    )
    printed = _tail_json(result)
    assert [p["replayId"] for p in printed] == [ack["replayId"] for ack in b]
    assert [p["payload"]["batch"] for p in printed] == ["B"] * 3


def _live_subscribers(server: RunningServer) -> int:
    count: int = httpx.get(f"{server.base_url}/readyz").json()["liveSubscribers"]
    return count


def test_tail_from_a_time_after_the_last_event_prints_nothing_from_before_it(
    server: RunningServer,
) -> None:
    """As above, but `tail --from T` starts before anything is published after T: it must print
    nothing of A (and report no gap: nothing was lost), then B once it is published. B is
    published once the server counts one more live subscriber (or tail has printed already)."""
    channel = channel_name()
    a = publish_direct(server, channel, [{"batch": "A", "n": n} for n in range(3)])
    moment = _a_moment_after(a)
    baseline = _live_subscribers(server)
    tail = subprocess.Popen(
        [REPLAYBUS, "tail", channel, "--from", _iso(moment), "--count", "1", "--json"],
        env=_environment(server),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert tail.stdout is not None
    assert tail.stderr is not None
    lines: list[str] = []
    reader = threading.Thread(target=lines.extend, args=(tail.stdout,), daemon=True)
    reader.start()
    try:
        wait_until(
            lambda: bool(lines) or tail.poll() is not None or _live_subscribers(server) > baseline,
            "tail to subscribe",
        )
        b = publish_direct(server, channel, [{"batch": "B", "n": 0}])
        assert tail.wait(timeout=30) == 0
        reader.join(10)
        stderr = tail.stderr.read()
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()
        tail.stdout.close()
        tail.stderr.close()
    printed = [json.loads(line) for line in lines]
    events = [(p["replayId"], p["payload"]) for p in printed if "gap" not in p]
    assert events == [(b[0]["replayId"], {"batch": "B", "n": 0})], stderr
    assert "gap" not in stderr, stderr


@pytest.mark.parametrize("transport", ["sse", "bayeux", "history"])
def test_tail_reports_a_gap_when_resuming_below_the_window(
    small_window: RunningServer, transport: str
) -> None:
    """The gap comes first, as a JSON line with the window's bounds, then the retained events."""
    channel = channel_name()
    published = [
        ack["replayId"]
        for ack in publish_direct(small_window, channel, [{"n": n} for n in range(2 * WINDOW)])
    ]
    result = _replaybus(
        _environment(small_window),
        *("tail", channel, "--from", str(published[0]), "--count", str(WINDOW), "--json"),
        *("--transport", transport),
    )
    assert result.returncode == 0, result.stderr
    [gap, *events] = [json.loads(line) for line in _lines(result.stdout)]
    assert gap["gap"] | {"reason": None} == {
        "requested": published[0],
        "earliest": published[-WINDOW],
        "latest": published[-1],
        "channel": channel,
        "channels": None,
        "reason": None,
    }
    assert [p["replayId"] for p in events] == published[-WINDOW:]
    assert f"gap: events after {published[0]} are no longer retained" in result.stderr


@pytest.mark.parametrize(
    "arguments",
    [("token",), ("publish", "/event/X__e", "{}"), ("tail", "/event/X__e")],
    ids=["token", "publish", "tail"],
)
def test_missing_credentials_exit_1_naming_the_variables(
    server: RunningServer, arguments: tuple[str, ...]
) -> None:
    environment = _environment(None)
    environment["REPLAYBUS_URL"] = server.base_url
    result = _replaybus(environment, *arguments)
    assert result.returncode == 1
    assert "REPLAYBUS_CLIENT_ID" in result.stderr
    assert "REPLAYBUS_CLIENT_SECRET" in result.stderr
