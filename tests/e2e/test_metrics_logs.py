"""Metrics and logs of real `replaybus serve` processes: SSE stream and delivery metrics, a
slow consumer cut off, one node-wide `/metrics` across worker processes, engine errors with
Redis stopped, and JSON logs that never contain a credential."""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import httpx
import orjson
from httpx_sse import aconnect_sse
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.e2e.server import run_server
from tests.e2e.sse import channel_name, dispatched, publish
from tests.harness.redis import running_redis

WAIT_S = 15.0
_POLL_S = 0.02  # between scrapes of another process's /metrics; the deadline bounds the wait
_LISTENING = re.compile(r"^replaybus listening on (http://\S+)$")


# -- reading /metrics ------------------------------------------------------------------------


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of the samples called `name` carrying (at least) `labels`; 0 if none."""
    return sum(
        sample.value
        for sample in samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


async def scrape(client: httpx.AsyncClient, base_url: str) -> list[Sample]:
    response = await client.get(base_url + "/metrics")
    assert response.status_code == 200, response.text
    return [
        sample
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    ]


async def until_metric(
    client: httpx.AsyncClient,
    base_url: str,
    name: str,
    wanted: Callable[[float], bool],
    wait_s: float = WAIT_S,
    **labels: str,
) -> list[Sample]:
    """Scrape until `name{labels}` satisfies `wanted`; the samples of that scrape."""
    current = 0.0
    try:
        async with asyncio.timeout(wait_s):
            while True:
                samples = await scrape(client, base_url)
                current = value(samples, name, **labels)
                if wanted(current):
                    return samples
                await asyncio.sleep(_POLL_S)
    except TimeoutError:
        raise AssertionError(f"{name}{labels} stayed at {current}") from None


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def until_output(output: list[str], wanted: Callable[[list[str]], bool], what: str) -> None:
    try:
        async with asyncio.timeout(WAIT_S):
            while True:
                if wanted(list(output)):
                    return
                await asyncio.sleep(_POLL_S)  # another process's output: nothing to await
    except TimeoutError:
        raise AssertionError(f"the server never logged {what}:\n" + "\n".join(output)) from None


# -- SSE -------------------------------------------------------------------------------------


async def test_sse_streams_and_deliveries_are_measured_per_stream() -> None:
    with run_server() as server:
        token = server.token()
        channel = channel_name()
        url = f"{server.base_url}/v1/stream{channel}"
        async with (
            httpx.AsyncClient(timeout=30) as client,
            aconnect_sse(client, "GET", url, headers=bearer(token)) as first,
            aconnect_sse(client, "GET", url, headers=bearer(token)) as second,
        ):
            assert first.response.status_code == second.response.status_code == 200
            acks = [
                await publish(client, server.base_url, token, channel, {"n": n}) for n in range(5)
            ]
            published = [ack["replayId"] for ack in acks]
            for source in (first, second):
                events = dispatched(source)
                async with asyncio.timeout(WAIT_S):
                    got = [int((await anext(events)).id) for _ in published]
                assert got == published

            samples = await until_metric(
                client,
                server.base_url,
                "replaybus_events_delivered_total",
                lambda v: v >= 10,
                transport="sse",
            )
            delivered = "replaybus_events_delivered_total"
            assert value(samples, delivered, tenant="default", transport="sse") == 10
            assert value(samples, delivered, transport="bayeux") == 0
            assert value(samples, "replaybus_sse_streams") == 2
            writes = value(samples, "replaybus_delivery_lag_seconds_count", transport="sse")
            assert 2 <= writes <= 10  # once per write, each write carrying 1 to 5 events
            assert value(samples, "replaybus_events_published_total", transport="rest") == 5
            assert value(samples, "replaybus_slow_consumer_disconnects_total") == 0

        async with httpx.AsyncClient(timeout=30) as client:
            await until_metric(client, server.base_url, "replaybus_sse_streams", lambda v: v == 0)


SLOW_PAYLOAD = {"blob": "x" * 64 * 1024}
SLOW_BATCHES = 40  # 40 x 5 events of 64 KiB: far more than the loopback socket buffers hold
STALL_BATCHES = 20  # 20 x 10 events of 60 KB: far more than the loopback socket buffers hold
STALL_WAIT_S = 25.0  # the send timeout (10 s) plus the guard's check interval (1 s), and margin


async def test_a_subscriber_that_stops_reading_is_cut_off_as_behind_and_resumes() -> None:
    """While the client reads nothing, the stream's writes back up in the socket, its live
    mailbox (10 events) overflows, and once the client reads again the server sends what it had
    buffered, says the subscriber is too far behind and ends the stream; resuming from the
    last event received delivers the rest."""
    settings = {"REPLAYBUS_SUBSCRIBER_QUEUE_SIZE": "10", "REPLAYBUS_MAX_BATCH_EVENTS": "5"}
    with run_server(settings) as server:
        token = server.token()
        channel = channel_name()
        url = f"{server.base_url}/v1/stream{channel}"
        published: list[int] = []
        received: list[int] = []
        async with (
            httpx.AsyncClient(timeout=30) as client,
            aconnect_sse(client, "GET", url, headers=bearer(token)) as slow,
        ):
            assert slow.response.status_code == 200
            for _ in range(SLOW_BATCHES):
                acks = await publish(client, server.base_url, token, channel, [SLOW_PAYLOAD] * 5)
                published += [ack["replayId"] for ack in acks]
            async with asyncio.timeout(WAIT_S):  # reading again: the stream must end
                body = "".join([text async for text in slow.response.aiter_text()])
            blocks = body.split("\n\n")
            received = [int(fields["id"]) for fields in map(_fields, blocks) if "data" in fields]
            assert blocks[-1] == "", blocks[-4:]
            assert blocks[-3] == ": too far behind: reconnect to catch up", blocks[-4:]
            assert blocks[-2].startswith("retry: "), blocks[-4:]  # ... and when to come back

            samples = await until_metric(
                client,
                server.base_url,
                "replaybus_slow_consumer_disconnects_total",
                lambda v: v >= 1,
            )
            cut = "replaybus_slow_consumer_disconnects_total"
            assert value(samples, cut, transport="sse", reason="behind") == 1
            assert value(samples, cut, transport="sse", reason="not_reading") == 0
            assert 0 < len(received) < len(published)
            assert received == published[: len(received)]  # in order, nothing skipped
            await until_metric(client, server.base_url, "replaybus_sse_streams", lambda v: v == 0)

            resume = {**bearer(token), "Last-Event-ID": str(received[-1])}
            async with aconnect_sse(client, "GET", url, headers=resume) as again:
                events = dispatched(again)
                async with asyncio.timeout(WAIT_S):
                    while len(received) < len(published):
                        received.append(int((await anext(events)).id))
            assert received == published


def _fields(block: str) -> dict[str, str]:
    """The fields of one SSE block (comments left out)."""
    fields = {}
    for line in block.split("\n"):
        name, _, text = line.partition(": ")
        if name:
            fields[name] = text
    return fields


# -- several workers -------------------------------------------------------------------------


def _published_by_worker(folder: Path, scratch: Path) -> dict[int, float]:
    """Each worker's own share of published REST events, read from its file in the
    multiprocess metrics folder."""
    shares: dict[int, float] = {}
    for database in folder.glob("counter_*.db"):
        pid = int(database.stem.rpartition("_")[2])
        alone = scratch / str(pid)
        alone.mkdir()
        shutil.copy(database, alone)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))  # type: ignore[no-untyped-call]
        shares[pid] = sum(
            sample.value
            for metric in registry.collect()
            for sample in metric.samples
            if sample.name == "replaybus_events_published_total"
            and sample.labels.get("transport") == "rest"
        )
    return shares


async def test_every_worker_answers_metrics_for_the_whole_node(tmp_path: Path) -> None:
    folder = tmp_path / "metrics"
    folder.mkdir()
    (tmp_path / "scratch").mkdir()
    with running_redis() as redis:
        env = {
            "REPLAYBUS_REDIS_URL": redis.url,
            "REPLAYBUS_LOG_LEVEL": "info",
            "REPLAYBUS_ACCESS_LOG": "false",
            "PROMETHEUS_MULTIPROC_DIR": str(folder),
        }
        with run_server(env, "--workers", "2") as server:
            output = server.output
            await until_output(
                output,
                lambda lines: sum("Application startup complete" in line for line in lines) == 2,
                "two started workers",
            )
            token = server.token()
            channel = channel_name()
            fresh = httpx.Limits(max_keepalive_connections=0)  # a new connection per request
            async with httpx.AsyncClient(timeout=30, limits=fresh) as client:
                for wave in range(5):  # concurrent connections, so both workers take some
                    await asyncio.gather(
                        *(
                            publish(client, server.base_url, token, channel, {"n": wave * 8 + n})
                            for n in range(8)
                        )
                    )
                shares = _published_by_worker(folder, tmp_path / "scratch")
                assert len(shares) == 2, shares
                assert all(0 < share < 40 for share in shares.values()), shares
                assert sum(shares.values()) == 40

                for _ in range(12):
                    samples = await scrape(client, server.base_url)
                    published = "replaybus_events_published_total"
                    assert value(samples, published, tenant="default", transport="rest") == 40
                    assert value(samples, "replaybus_publish_duration_seconds_count") == 40


# -- engine errors ---------------------------------------------------------------------------


async def test_publishing_with_redis_stopped_is_answered_503_and_counted() -> None:
    with running_redis() as redis, run_server({"REPLAYBUS_REDIS_URL": redis.url}) as server:
        token = server.token()
        channel = channel_name()
        async with httpx.AsyncClient(timeout=30) as client:
            await publish(client, server.base_url, token, channel, {"n": 1})
            before = await scrape(client, server.base_url)
            assert value(before, "replaybus_engine_errors_total") == 0

            redis.process.terminate()  # the harness's redis-server, started by this test
            redis.process.wait(timeout=15)
            refused = []
            for n in range(3):
                response = await client.post(
                    f"{server.base_url}/v1/events{channel}", json={"n": n}, headers=bearer(token)
                )
                refused.append((response.status_code, response.json()["error"]))

            assert refused == [(503, "engine_unavailable")] * 3
            samples = await scrape(client, server.base_url)
            assert value(samples, "replaybus_engine_errors_total", protocol="rest") == 3
            assert value(samples, "replaybus_engine_errors_total", protocol="bayeux") == 0
            published = "replaybus_events_published_total"
            assert value(samples, published, tenant="default", transport="rest") == 1


# -- logs ------------------------------------------------------------------------------------


def _banner(output: list[str]) -> tuple[int, int]:
    """Where the start-up banner (printed, not logged) begins and ends in the output."""
    [start] = [i for i, line in enumerate(output) if _LISTENING.match(line)]
    end = start + 1
    while end < len(output) and output[end].startswith("  "):
        end += 1
    return start, end


async def test_json_logs_carry_request_fields_and_never_a_credential(signing_key_pem: str) -> None:
    client_id = "logs-client"
    client_secret = "cs-" + secrets.token_urlsafe(24)
    operator_key = "op-" + secrets.token_urlsafe(24)
    password = "pw-" + secrets.token_urlsafe(24)
    wrong_secret = "wrong-" + secrets.token_urlsafe(24)
    garbage_token = "garbage-" + secrets.token_urlsafe(24)
    signing_key = signing_key_pem
    env = {
        "REPLAYBUS_LOG_FORMAT": "json",
        "REPLAYBUS_ACCESS_LOG": "true",
        "REPLAYBUS_LOG_LEVEL": "info",
        "REPLAYBUS_OPERATOR_KEY": operator_key,
        "REPLAYBUS_SIGNING_KEY": signing_key,
        "REPLAYBUS_BOOTSTRAP_USERNAME": "ada@example.com",
        "REPLAYBUS_BOOTSTRAP_PASSWORD": password,
    }
    channel = channel_name()
    issued: list[str] = []
    with run_server(env, client_id=client_id, client_secret=client_secret) as server:
        output = server.output
        base = server.base_url
        credentials = {"client_id": client_id, "client_secret": client_secret}
        async with httpx.AsyncClient(timeout=30) as client:
            answer = await client.post(
                base + "/services/oauth2/token",
                data={"grant_type": "client_credentials", **credentials},
            )
            assert answer.status_code == 200, answer.text
            token = answer.json()["access_token"]
            wrong = await client.post(
                base + "/v1/oauth/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": client_id,
                    "client_secret": wrong_secret,
                },
            )
            assert wrong.status_code == 400, wrong.text
            user = await client.post(
                base + "/services/oauth2/token",
                data={
                    "grant_type": "password",
                    "username": "ada@example.com",
                    "password": password,
                    **credentials,
                },
            )
            assert user.status_code == 200, user.text
            refresh_token = user.json()["refresh_token"]
            refreshed = await client.post(  # credentials in the query, as some clients send
                base + "/services/oauth2/token",
                params={"grant_type": "refresh_token", "refresh_token": refresh_token},
                data=credentials,
            )
            assert refreshed.status_code == 200, refreshed.text
            issued += [token, user.json()["access_token"], refreshed.json()["access_token"]]

            acks = [await publish(client, base, token, channel, {"n": n}) for n in range(2)]
            history = await client.get(base + "/v1/events" + channel, headers=bearer(token))
            assert history.status_code == 200

            query = {"replayId": "-2", "access_token": token}
            async with aconnect_sse(
                client, "GET", base + "/v1/stream" + channel, params=query
            ) as sse:
                assert sse.response.status_code == 200
                events = dispatched(sse)
                async with asyncio.timeout(WAIT_S):
                    assert int((await anext(events)).id) == acks[0]["replayId"]

            denied = await client.get(
                base + "/v1/channels" + channel, headers=bearer(garbage_token)
            )
            assert denied.status_code == 401
            admin = await client.get(base + "/v1/admin/tenants", headers=bearer(operator_key))
            assert admin.status_code == 200, admin.text
            handshake = await client.post(
                base + "/cometd/58.0",
                json=[
                    {
                        "channel": "/meta/handshake",
                        "version": "1.0",
                        "supportedConnectionTypes": ["long-polling"],
                    }
                ],
                headers=bearer(token),
            )
            assert handshake.json()[0]["successful"] is True, handshake.text
            assert (await client.get(base + "/healthz")).status_code == 200
    # The server has stopped: its output is complete.

    secrets_used = {
        "access token": token,
        "user's access token": issued[1],
        "refreshed access token": issued[2],
        "refresh token": refresh_token,
        "client secret": client_secret,
        "wrong client secret": wrong_secret,
        "password": password,
        "operator key": operator_key,
        "garbage token": garbage_token,
        "signing key": signing_key.splitlines()[1],
    }
    everything = "\n".join(output)
    leaked = [name for name, secret in secrets_used.items() if secret in everything]
    assert leaked == [], f"{leaked} appear in the server's output:\n{everything}"

    start, end = _banner(output)
    assert output[start + 3] == "  client_secret: from REPLAYBUS_BOOTSTRAP_CLIENT_SECRET"
    lines = []
    for line in output[:start] + output[end:]:
        try:
            decoded = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise AssertionError(f"not a JSON log line: {line!r}") from None
        assert isinstance(decoded, dict), line
        assert {"time", "level", "logger", "message"} <= set(decoded), decoded
        datetime.fromisoformat(decoded["time"])
        lines.append(decoded)
    assert any(line["logger"] == "uvicorn.error" for line in lines)

    access = [entry for entry in lines if entry["logger"] == "replaybus.access"]
    for entry in access:
        assert {"client", "method", "path", "route", "status", "duration_ms", "tenant"} <= set(
            entry
        ), entry
        assert isinstance(entry["duration_ms"], float | int), entry
        assert entry["duration_ms"] >= 0, entry
        assert entry["client"].startswith("127.0.0.1:"), entry
    requests = [
        (entry["method"], entry["path"], entry["route"], entry["status"], entry["tenant"])
        for entry in access
    ]
    events_route = "/v1/events/{channel:path}"
    stream_path = f"/v1/stream{channel}?replayId=-2&access_token=[redacted]"
    refresh_path = "/services/oauth2/token?grant_type=refresh_token&refresh_token=[redacted]"
    expected = [
        ("POST", "/services/oauth2/token", "/services/oauth2/token", 200, None),
        ("POST", "/v1/oauth/token", "/v1/oauth/token", 400, None),
        ("POST", "/services/oauth2/token", "/services/oauth2/token", 200, None),
        ("POST", refresh_path, "/services/oauth2/token", 200, None),
        ("POST", f"/v1/events{channel}", events_route, 201, "default"),
        ("POST", f"/v1/events{channel}", events_route, 201, "default"),
        ("GET", f"/v1/events{channel}", events_route, 200, "default"),
        ("GET", stream_path, "/v1/stream/{channel:path}", 200, "default"),
        ("GET", f"/v1/channels{channel}", "/v1/channels/{channel:path}", 401, None),
        ("GET", "/v1/admin/tenants", "/v1/admin/tenants", 200, None),
        ("POST", "/cometd/58.0", "/cometd/{version}", 200, "default"),
        ("GET", "/healthz", "/healthz", 200, None),
    ]
    assert sorted(requests, key=repr) == sorted(expected, key=repr), requests


async def test_a_client_that_stops_reading_is_cut_off_after_the_send_timeout() -> None:
    """A socket that never reads: the server's writes back up until one stays pending for the
    send timeout (two heartbeats, at least 10 s), and the stream is ended as `not_reading`,
    its place given back; the server goes on serving others meanwhile."""
    settings = {"REPLAYBUS_SUBSCRIBER_QUEUE_SIZE": "100000", "REPLAYBUS_SSE_HEARTBEAT": "1s"}
    with run_server(settings) as server:
        token = server.token()
        channel = channel_name()
        host, port = server.base_url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        request = f"GET /v1/stream{channel} HTTP/1.1\r\nHost: {host}\r\n"
        writer.write(f"{request}Authorization: Bearer {token}\r\n\r\n".encode())
        await reader.readuntil(b"\r\n\r\n")  # the stream is open; from here nothing is read
        try:
            async with httpx.AsyncClient(timeout=30) as client:
                payload = {"blob": "x" * 60_000}
                for _ in range(STALL_BATCHES):  # far more than the socket buffers hold
                    await publish(client, server.base_url, token, channel, [payload] * 10)
                assert (await client.get(server.base_url + "/healthz")).status_code == 200
                samples = await until_metric(
                    client,
                    server.base_url,
                    "replaybus_slow_consumer_disconnects_total",
                    lambda v: v >= 1,
                    wait_s=STALL_WAIT_S,
                )
                cut = "replaybus_slow_consumer_disconnects_total"
                assert value(samples, cut, transport="sse", reason="not_reading") == 1
                assert value(samples, cut, transport="sse", reason="behind") == 0
                await until_metric(
                    client, server.base_url, "replaybus_sse_streams", lambda v: v == 0
                )
        finally:
            writer.transport.abort()
