"""Locust load test for a replaybus deployment: publishers, SSE subscribers and Bayeux
long-poll subscribers on one channel, with publish → deliver latency as a custom metric.

    locust -f loadtests/locustfile.py --headless -u 60 -r 20 -t 2m --host https://events.example.com

Environment: REPLAYBUS_CLIENT_ID / REPLAYBUS_CLIENT_SECRET (client-credentials grant; the client
needs `publish` and `subscribe`), LOAD_CHANNEL (default /event/Load__e), LOAD_PUBLISH_RATE
(events per second per publisher user, default 10), LOAD_STREAM_SECONDS (how long one SSE stream
or one Bayeux session lasts before the user reconnects, default 30). Gevent-friendly: only
locust's HTTP client (requests) and plain JSON, nothing asyncio.

Latency is `now - sentAt` (the publisher's wall clock in the payload): run publishers and
subscribers on the same machine, or keep the machines' clocks in sync.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Iterator
from typing import Any

from locust import HttpUser, constant, constant_throughput, task

CHANNEL = os.environ.get("LOAD_CHANNEL", "/event/Load__e")
PUBLISH_RATE = float(os.environ.get("LOAD_PUBLISH_RATE", "10"))
STREAM_SECONDS = float(os.environ.get("LOAD_STREAM_SECONDS", "30"))
_SEQUENCE = itertools.count()


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """(event type, data) of each dispatched Server-Sent Event; comments and cursors skipped."""
    kind, data = "message", list[str]()
    for line in lines:
        if not line:
            if data:
                yield kind, "\n".join(data)
            kind, data = "message", list[str]()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif line.startswith("event:"):
            kind = line[6:].strip()


class _ReplaybusUser(HttpUser):
    abstract = True
    token = ""

    def on_start(self) -> None:
        form = {
            "grant_type": "client_credentials",
            "client_id": os.environ["REPLAYBUS_CLIENT_ID"],
            "client_secret": os.environ["REPLAYBUS_CLIENT_SECRET"],
        }
        response = self.client.post("/v1/oauth/token", data=form, name="token")
        response.raise_for_status()
        self.token = response.json()["access_token"]

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def delivered(self, transport: str, payload: dict[str, Any], size: int) -> None:
        sent = payload.get("sentAt")
        if not isinstance(sent, int | float):
            return  # not one of ours
        self.environment.events.request.fire(
            request_type="DELIVER",
            name=transport,
            response_time=(time.time() - sent) * 1000,
            response_length=size,
            exception=None,
            context={},
        )


class Publisher(_ReplaybusUser):
    weight = 1
    wait_time = constant_throughput(PUBLISH_RATE)

    @task
    def publish(self) -> None:
        payload = {"sentAt": time.time(), "n": next(_SEQUENCE)}
        with self.client.post(
            "/v1/events" + CHANNEL,
            json=payload,
            headers=self.auth,
            name="publish",
            catch_response=True,
        ) as response:
            if response.status_code != 201:
                response.failure(f"{response.status_code}: {response.text[:200]}")


class SseSubscriber(_ReplaybusUser):
    weight = 5
    wait_time = constant(0)

    @task
    def stream(self) -> None:
        deadline = time.monotonic() + STREAM_SECONDS
        with self.client.get(
            "/v1/stream" + CHANNEL,
            headers=self.auth,
            stream=True,
            name="sse stream",
            timeout=(10, STREAM_SECONDS + 30),
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text[:200]}")
                return
            lines = response.iter_lines(decode_unicode=True)
            for kind, data in sse_events(lines):
                if kind == "message":
                    envelope = json.loads(data)
                    self.delivered("sse", envelope["payload"], len(data))
                if time.monotonic() >= deadline:
                    break
            response.success()


class LongPollSubscriber(_ReplaybusUser):
    weight = 5
    wait_time = constant(0)

    def _bayeux(self, messages: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
        with self.client.post(
            "/cometd/58.0",
            json=messages,
            headers=self.auth,
            name=name,
            catch_response=True,
            timeout=(10, 150),
        ) as response:
            replies: list[dict[str, Any]] = response.json() if response.status_code == 200 else []
            meta = [r for r in replies if str(r.get("channel", "")).startswith("/meta/")]
            if response.status_code != 200 or not all(r.get("successful") for r in meta):
                response.failure(f"{response.status_code}: {response.text[:200]}")
                return []
            return replies

    @task
    def session(self) -> None:
        handshake = {
            "channel": "/meta/handshake",
            "version": "1.0",
            "supportedConnectionTypes": ["long-polling"],
        }
        replies = self._bayeux([handshake], "bayeux handshake")
        if not replies:
            return
        client_id = replies[0]["clientId"]
        subscribe = {"channel": "/meta/subscribe", "clientId": client_id, "subscription": CHANNEL}
        if not self._bayeux([subscribe], "bayeux subscribe"):
            return
        connect = {
            "channel": "/meta/connect",
            "clientId": client_id,
            "connectionType": "long-polling",
        }
        deadline = time.monotonic() + STREAM_SECONDS
        while time.monotonic() < deadline:
            for message in self._bayeux([connect], "bayeux connect"):
                if message.get("channel") == CHANNEL:
                    self.delivered("bayeux", message["data"]["payload"], 0)
        self._bayeux([{"channel": "/meta/disconnect", "clientId": client_id}], "bayeux disconnect")
