"""Readiness tells the truth about the engine: `/readyz` fails (503 `not_ready`) while the node
cannot publish and deliver through Redis, recovers by itself when Redis does, and `/healthz`
(the process is up) stays 200 throughout.

Readiness publishes a canary event and waits for it to come back through the node's live
fan-out, for at most `REPLAYBUS_READY_TIMEOUT`; probes within a second of the last one share its
answer (`app/readiness.py`). So a change is seen within that timeout plus that second.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.server import run_server
from tests.e2e.sse import channel_name
from tests.harness.redis import running_redis
from tests.harness.tcp_proxy import TcpProxy, running_proxy

READY_TIMEOUT_S = 1.0
REUSE_S = 1.0  # probes within this long of the last one share its answer (app/readiness.py)
MARGIN_S = 3.0  # a loaded two-core machine: the probe's own requests, Redis going away
# After Redis is back, the live feed reconnects with backoff capped at 5 s
# (storage/redis/live.py), then the next canary makes the round trip.
RECONNECT_BACKOFF_CAP_S = 5.0
NOTICED_WITHIN_S = READY_TIMEOUT_S + REUSE_S + MARGIN_S
RECOVERED_WITHIN_S = RECONNECT_BACKOFF_CAP_S + READY_TIMEOUT_S + REUSE_S + MARGIN_S
READY = "200 ready"
NOT_READY = "503 not_ready"


async def _until_readiness(
    client: httpx.AsyncClient, base_url: str, wanted: str, within: float
) -> tuple[dict[str, Any], float]:
    """Poll `/readyz` until it answers `wanted` (`READY` or `NOT_READY`); every other answer
    must be the other of the two. `/healthz` must answer 200 at every step. Returns the
    wanted body and how long it took."""
    started = time.monotonic()
    seen: list[str] = []
    for _ in range(10_000):
        response = await client.get(base_url + "/readyz")
        body: dict[str, Any] = response.json()
        outcome = f"{response.status_code} {body.get('error', body.get('status'))}"
        seen.append(outcome)
        assert outcome in (READY, NOT_READY), f"/readyz answered {response.status_code} {body}"
        health = await client.get(base_url + "/healthz")
        assert health.status_code == 200, health.text
        assert health.json() == {"status": "ok"}
        if outcome == wanted:
            return body, time.monotonic() - started
        if time.monotonic() - started > within:
            break
        await asyncio.sleep(0.05)  # another process's state: nothing to await but it
    raise AssertionError(f"/readyz did not answer {wanted} within {within} s: {seen[-10:]}")


async def test_readiness_fails_while_redis_is_stopped_and_recovers_when_it_is_back(
    tmp_path: Path,
) -> None:
    with ExitStack() as first:
        redis = first.enter_context(running_redis(directory=tmp_path))
        port = redis.port
        env = {"REPLAYBUS_REDIS_URL": redis.url, "REPLAYBUS_READY_TIMEOUT": f"{READY_TIMEOUT_S}s"}
        with run_server(env) as server:
            async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
                ready, _ = await _until_readiness(client, server.base_url, READY, 30)
                assert ready["heldConnects"] == 0
                first.close()  # SIGTERM to redis-server, waited for
                assert redis.process.poll() is not None
                down, noticed = await _until_readiness(
                    client, server.base_url, NOT_READY, NOTICED_WITHIN_S
                )
                assert down["message"], down
                # The same port and data folder, as an operator's restart would.
                with running_redis(port=port, directory=tmp_path):
                    back, recovered = await _until_readiness(
                        client, server.base_url, READY, RECOVERED_WITHIN_S
                    )
    print(
        f"\nredis stopped: not ready after {noticed:.2f} s ({down['message']}); "
        f"restarted: ready again after {recovered:.2f} s"
    )
    assert back["status"] == "ready"


class PubSubStallingProxy(TcpProxy):
    """The harness's TCP proxy, plus: after `stall()`, whatever Redis sends on a pub/sub
    connection (one that has sent a SUBSCRIBE) is held back until `resume()`, while the
    connection stays open and every other connection keeps flowing. Commands, PING included,
    are still answered: a half-dead live feed that a ping-only check cannot see."""

    def __init__(self, target_port: int) -> None:
        super().__init__(target_port)
        self._flowing: asyncio.Event | None = None
        self.pubsub_connections = 0

    def stall(self) -> None:
        self._call(lambda: self._flow().clear())

    def resume(self) -> None:
        self._call(lambda: self._flow().set())

    def _flow(self) -> asyncio.Event:
        """Set while traffic flows; made on the proxy's own loop."""
        if self._flowing is None:
            self._flowing = asyncio.Event()
            self._flowing.set()
        return self._flowing

    async def _forward(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream_reader: asyncio.StreamReader,
        upstream_writer: asyncio.StreamWriter,
    ) -> None:
        pubsub = asyncio.Event()

        async def request(chunk: bytes) -> None:
            if not pubsub.is_set() and b"SUBSCRIBE" in chunk.upper():
                pubsub.set()  # before the command goes on: its confirmation is held too
                self.pubsub_connections += 1

        async def answer(chunk: bytes) -> None:
            if pubsub.is_set():
                await self._flow().wait()

        self._start_pipes(
            self._pipe(reader, upstream_writer, request),
            self._pipe(upstream_reader, writer, answer),
        )


async def _ping(port: int) -> bytes:
    """PING on a new connection (what a ping-only readiness check would send)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"PING\r\n")
        await writer.drain()
        async with asyncio.timeout(5):
            return await reader.readline()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_readiness_fails_when_live_delivery_stalls_though_redis_answers_pings() -> None:
    with running_redis() as redis, running_proxy(PubSubStallingProxy(redis.port)) as proxy:
        env = {
            "REPLAYBUS_REDIS_URL": f"redis://127.0.0.1:{proxy.port}/0",
            "REPLAYBUS_READY_TIMEOUT": f"{READY_TIMEOUT_S}s",
        }
        with run_server(env) as server:
            token = server.token()
            url = f"{server.base_url}/v1/events{channel_name()}"
            headers = {"Authorization": f"Bearer {token}"}
            async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
                await _until_readiness(client, server.base_url, READY, 30)
                assert proxy.pubsub_connections >= 1  # the node's live feed goes through it
                proxy.stall()
                down, noticed = await _until_readiness(
                    client, server.base_url, NOT_READY, NOTICED_WITHIN_S
                )
                # Redis itself answers: pings, and publishes are stored and acknowledged.
                pong = await _ping(proxy.port)
                stored = await client.post(url, json={"while": "stalled"}, headers=headers)
                proxy.resume()
                back, recovered = await _until_readiness(
                    client, server.base_url, READY, READY_TIMEOUT_S + REUSE_S + MARGIN_S
                )
    print(
        f"\nlive feed stalled: not ready after {noticed:.2f} s ({down['message']}); "
        f"resumed: ready again after {recovered:.2f} s"
    )
    assert "did not come back through the live fan-out" in down["message"], down
    assert pong == b"+PONG\r\n"
    assert stored.status_code == 201, stored.text
    assert back["status"] == "ready"
