"""Reconnect-storm control on a real node: replays from history are admitted only so many at a
time (`REPLAYBUS_MAX_CONCURRENT_REPLAYS`), the rest are turned away with a jittered
`Retry-After` while live-only streams still get in, and the reconnect delays a node suggests
(`retry:`) are spread per stream, so clients cut off together do not come back together.
"""

from __future__ import annotations

import asyncio
import math
import socket
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.server import RunningServer, run_server
from tests.e2e.sse import channel_name

EVENTS = 20_000
BATCH = 500
PADDING = "x" * 2000  # ~2 KB per event: 40 MB of history, far more than socket buffers hold
HISTORY_MAX_LIMIT = 50  # events per catch-up read: the replay is many small steps
SSE_RETRY_S = 1.0
RECONNECT_JITTER_S = 2.0
RETRY_AFTER_MAX = math.ceil(1 + RECONNECT_JITTER_S)  # 1 s plus up to the jitter, rounded up
STREAMS = 8  # streams whose `retry:` hints are compared


def _settings() -> dict[str, str]:
    return {
        "REPLAYBUS_MAX_CONCURRENT_REPLAYS": "1",
        "REPLAYBUS_HISTORY_MAX_LIMIT": str(HISTORY_MAX_LIMIT),
        "REPLAYBUS_SSE_RETRY": f"{SSE_RETRY_S:g}s",
        "REPLAYBUS_RECONNECT_JITTER": f"{RECONNECT_JITTER_S:g}s",
    }


async def _metric(
    client: httpx.AsyncClient, server: RunningServer, name: str, **labels: str
) -> float:
    """One sample of the node's /metrics (0 when absent, as a counter never incremented)."""
    text = (await client.get(server.base_url + "/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def _publish_backlog(client: httpx.AsyncClient, url: str, token: str) -> list[int]:
    replay_ids: list[int] = []
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    for start in range(0, EVENTS, BATCH):
        batch = [{"n": n, "padding": PADDING} for n in range(start, start + BATCH)]
        response = await client.post(url, content=orjson.dumps(batch), headers=headers)
        assert response.status_code == 201, response.text
        acks = response.json()
        assert len(acks) == BATCH, acks[:2]
        replay_ids.extend(int(ack["replayId"]) for ack in acks)
    return replay_ids


@contextmanager
def _stalled_replay(server: RunningServer, path: str, token: str) -> Iterator[socket.socket]:
    """A stream from -2 on a raw socket that never reads: once the node has filled the socket
    buffers its writes block, so the stream stays catching up (holding its replay place)."""
    host, port = server.base_url.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with closing(sock):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting
        sock.settimeout(10)
        sock.connect((host, int(port)))
        request = (
            f"GET {path}?replayId=-2 HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
        )
        sock.sendall(request.encode())
        yield sock


async def _attempt(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], params: dict[str, str]
) -> tuple[int, httpx.Headers, dict[str, Any] | None]:
    """Open a stream; an admitted one (200) is closed at once, a refused one's body is read."""
    async with client.stream("GET", url, headers=headers, params=params) as response:
        if response.status_code == 200:
            return 200, response.headers, None
        await response.aread()
        body: dict[str, Any] = response.json()
        return response.status_code, response.headers, body


def _check_overloaded(status: int, headers: httpx.Headers, body: dict[str, Any] | None) -> None:
    assert status == 503, (status, body)
    assert body is not None
    assert body["error"] == "overloaded", body
    assert 1 <= int(headers["retry-after"]) <= RETRY_AFTER_MAX, headers


async def test_replays_over_the_limit_get_503_overloaded_while_live_streams_get_in() -> None:
    channel = channel_name()
    with run_server(_settings()) as server:
        token = server.token()
        auth = {"Authorization": f"Bearer {token}"}
        url = f"{server.base_url}/v1/stream{channel}"
        async with httpx.AsyncClient(timeout=httpx.Timeout(60.0), trust_env=False) as client:
            published = await _publish_backlog(
                client, f"{server.base_url}/v1/events{channel}", token
            )
            pages = EVENTS // HISTORY_MAX_LIMIT  # reads a complete replay would take
            refused = 0
            with _stalled_replay(server, f"/v1/stream{channel}", token):
                async with asyncio.timeout(10):
                    for _ in range(500):  # until the stalled stream has its place and answers
                        if await _metric(client, server, "replaybus_sse_streams") == 1:
                            break
                        await asyncio.sleep(0.02)  # another process's state: nothing to await
                    else:
                        raise AssertionError("the stalled replay never opened its stream")
                # Replaying from the start and resuming after an id both read history.
                replay = await _attempt(client, url, auth, {"replayId": "-2"})
                _check_overloaded(*replay)
                refused += 1
                middle = str(published[EVENTS // 2])
                resume = await _attempt(client, url, {**auth, "Last-Event-ID": middle}, {})
                _check_overloaded(*resume)
                refused += 1
                # Live-only streams read no history: they are still admitted.
                assert (await _attempt(client, url, auth, {}))[0] == 200
                assert (await _attempt(client, url, auth, {"replayId": "-1"}))[0] == 200
                reads_while_stalled = await _metric(
                    client, server, "replaybus_replay_reads_total", transport="sse"
                )
            # The stalled stream is gone: its place frees and a replay is admitted again.
            admitted_after = None
            started = time.monotonic()
            async with asyncio.timeout(15):
                for _ in range(300):
                    status, headers, body = await _attempt(client, url, auth, {"replayId": "-2"})
                    if status == 200:
                        admitted_after = time.monotonic() - started
                        break
                    _check_overloaded(status, headers, body)
                    refused += 1
                    await asyncio.sleep(0.05)  # another process's state: nothing to await
            counted = await _metric(
                client, server, "replaybus_admission_refused_total", kind="replay"
            )
    assert admitted_after is not None, "no replay was admitted after the stalled one closed"
    print(
        f"\nreplay admission: {refused} replay(s) refused while one stalled after "
        f"{reads_while_stalled:.0f} of {pages} history reads; admitted again "
        f"{admitted_after:.2f} s after it closed"
    )
    # The stalled replay was still catching up when the others were refused.
    assert 1 <= reads_while_stalled < pages
    # Prometheus counted every refusal, as a replay.
    assert counted >= 1
    assert counted == refused


async def test_retry_hints_are_jittered_per_stream() -> None:
    with run_server(_settings()) as server:
        token = server.token()
        url = f"{server.base_url}/v1/stream{channel_name()}"
        hints: list[int] = []
        async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
            for _ in range(STREAMS):
                async with client.stream(
                    "GET", url, headers={"Authorization": f"Bearer {token}"}
                ) as response:
                    assert response.status_code == 200
                    async with asyncio.timeout(10):
                        async for line in response.aiter_lines():
                            if line.startswith("retry:"):
                                hints.append(int(line.removeprefix("retry:").strip()))
                                break
    assert len(hints) == STREAMS, hints
    low, high = SSE_RETRY_S * 1000, (SSE_RETRY_S + RECONNECT_JITTER_S) * 1000
    assert all(low <= hint <= high for hint in hints), hints
    assert len(set(hints)) > 1, f"every stream suggested the same delay: {hints}"
