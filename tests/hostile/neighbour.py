"""Tenant B's steady workload, in its own process so an attacker in the test's process cannot
slow B's clocks: one publisher at a fixed rate, one SSE subscriber and one Bayeux subscriber of
the same channel, and a new access token asked for every second. It records, per subscriber,
every ReplayId received and when, and every error B sees (a token request refused included);
the report says what was lost, duplicated or out of order, the deliveries in each one-second
window, and the delivery latency (publish sent to event received, one clock).

B connects from its own address (`ADDRESS`, another loopback address than A's), as another
host would: what the node limits per client address is A's alone.

`python -m tests.hostile.neighbour '<json settings>'` prints `ready` once both subscribers have
received B's first event, runs until a line arrives on stdin, waits (bounded) for what is
still in flight, and prints the report as one JSON line. `Neighbour` drives it from a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from tests.harness import bayeux_http

if TYPE_CHECKING:
    from tests.e2e.server import TenantClient

__all__ = ["ADDRESS", "Neighbour", "Report", "SubscriberReport", "neighbour"]

#: B's address: the node sees B's connections come from here, A's from 127.0.0.1.
ADDRESS = "127.0.0.2"
_TOKEN_INTERVAL_S = 1.0
_READY_S = 30.0  # from start until both subscribers have B's first event
_DRAIN_S = 15.0  # after the last publish, for every acknowledged event to arrive
_TIMEOUT = httpx.Timeout(60.0)


@dataclass
class SubscriberReport:
    """One subscriber's view: counts of what it missed, got twice or out of order, events per
    one-second window from `ready` to `stop`, and delivery latencies in milliseconds."""

    lost: int
    duplicates: int
    out_of_order: int
    windows: list[int]
    latency_ms: dict[str, float]


@dataclass
class Report:
    published: int
    errors: list[str]
    subscribers: dict[str, SubscriberReport]
    publish_ms: dict[str, float]
    tokens: int  # access tokens B was granted while it ran

    @property
    def min_window(self) -> int:
        """The fewest deliveries any subscriber had in any one-second window."""
        counts = [min(s.windows, default=0) for s in self.subscribers.values()]
        return min(counts, default=0)

    def problems(self) -> list[str]:
        """Everything that broke the promise to B: errors, losses, duplicates, reordering,
        windows without deliveries, and a run in which B got no token at all."""
        found = list(self.errors)
        if not self.tokens:
            found.append("tokens: B was granted none")
        for name, subscriber in self.subscribers.items():
            if subscriber.lost or subscriber.duplicates or subscriber.out_of_order:
                found.append(
                    f"{name}: {subscriber.lost} lost, {subscriber.duplicates} duplicated, "
                    f"{subscriber.out_of_order} out of order of {self.published}"
                )
            empty = [second for second, count in enumerate(subscriber.windows) if count == 0]
            if empty or not subscriber.windows:
                found.append(f"{name}: no deliveries in second(s) {empty} of {subscriber.windows}")
        return found

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Report:
        return cls(
            published=data["published"],
            errors=data["errors"],
            subscribers={k: SubscriberReport(**v) for k, v in data["subscribers"].items()},
            publish_ms=data["publish_ms"],
            tokens=data["tokens"],
        )


def _percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"p50": math.nan, "p99": math.nan, "max": math.nan}
    ordered = sorted(samples)

    def at(fraction: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000, 1)

    return {"p50": at(0.5), "p99": at(0.99), "max": round(ordered[-1] * 1000, 1)}


@dataclass
class _Subscriber:
    received: list[tuple[int, float]] = field(default_factory=list)  # (replayId, when)

    def report(self, acknowledged: dict[int, float], ready: float, stop: float) -> SubscriberReport:
        ids = [replay_id for replay_id, _ in self.received]
        expected = set(acknowledged)
        seen = set(ids)
        backwards = sum(1 for a, b in itertools.pairwise(ids) if b <= a)
        windows = [0] * max(0, int(stop - ready))
        latencies = []
        for replay_id, when in self.received:
            second = int(when - ready)
            if 0 <= second < len(windows):
                windows[second] += 1
            if replay_id in acknowledged:
                latencies.append(when - acknowledged[replay_id])
        return SubscriberReport(
            lost=len(expected - seen),
            duplicates=len(ids) - len(seen),
            out_of_order=backwards,
            windows=windows,
            latency_ms=_percentiles(latencies),
        )


class _Workload:
    def __init__(self, settings: dict[str, Any]) -> None:
        self.base_url = settings["base_url"]
        self.channel = settings["channel"]
        self.interval = 1.0 / settings["rate"]
        self.headers = {"Authorization": f"Bearer {settings['token']}"}
        self.credentials = {
            "grant_type": "client_credentials",
            "client_id": settings["client_id"],
            "client_secret": settings["client_secret"],
        }
        self.tokens = 0
        self.errors: list[str] = []
        self.sent: dict[int, float] = {}  # replayId -> when its publish was sent
        self.publish_times: list[float] = []
        self.sse = _Subscriber()
        self.bayeux = _Subscriber()
        self.stopping = asyncio.Event()
        self.arrived = asyncio.Event()  # set at every delivery, for whoever waits on them

    def error(self, text: str) -> None:
        if len(self.errors) < 50:
            self.errors.append(text)

    # -- publisher -----------------------------------------------------------------------------

    async def publish(self, http: httpx.AsyncClient, sequence: int) -> None:
        sent = time.monotonic()
        try:
            response = await http.post(
                "/v1/events" + self.channel, json={"seq": sequence}, headers=self.headers
            )
        except httpx.HTTPError as failure:
            self.error(f"publish {sequence}: {failure!r}")
            return
        self.publish_times.append(time.monotonic() - sent)
        if response.status_code != 201:
            self.error(f"publish {sequence}: {response.status_code} {response.text[:200]}")
            return
        self.sent[int(response.json()["replayId"])] = sent

    async def publisher(self, http: httpx.AsyncClient) -> None:
        sequence = 0
        next_at = time.monotonic()
        while not self.stopping.is_set():
            await self.publish(http, sequence)
            sequence += 1
            next_at = max(next_at + self.interval, time.monotonic())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(next_at - time.monotonic()):
                    await self.stopping.wait()

    # -- tokens --------------------------------------------------------------------------------

    async def ask_for_tokens(self, http: httpx.AsyncClient) -> None:
        """A new access token every second, as a fleet of B's workers starting would ask."""
        while not self.stopping.is_set():
            try:
                response = await http.post("/v1/oauth/token", data=self.credentials)
            except httpx.HTTPError as failure:
                self.error(f"token: {failure!r}")
            else:
                if response.status_code == 200:
                    self.tokens += 1
                else:
                    self.error(f"token: {response.status_code} {response.text[:200]}")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_TOKEN_INTERVAL_S):
                    await self.stopping.wait()

    # -- SSE -----------------------------------------------------------------------------------

    async def stream(self, http: httpx.AsyncClient, opened: asyncio.Event) -> None:
        url = f"/v1/stream{self.channel}?replayId=-1"
        async with http.stream("GET", url, headers=self.headers) as response:
            if response.status_code != 200:
                self.error(f"SSE: {response.status_code} {(await response.aread())[:200]!r}")
                return
            opened.set()
            event = ""
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    if event:
                        self.error(f"SSE: event {event}: {line[:200]}")
                    else:
                        envelope = orjson.loads(line[5:])
                        self.sse.received.append((int(envelope["replayId"]), time.monotonic()))
                        self.arrived.set()
                elif line == "":
                    event = ""
            if not self.stopping.is_set():
                self.error("SSE: the stream ended")

    # -- Bayeux --------------------------------------------------------------------------------

    async def bayeux_post(
        self, http: httpx.AsyncClient, message: dict[str, Any]
    ) -> list[dict[str, Any]]:
        try:
            response = await http.post(bayeux_http.PATH, json=[message], headers=self.headers)
        except httpx.HTTPError as failure:
            self.error(f"Bayeux {message['channel']}: {failure!r}")
            return []
        if response.status_code != 200:
            self.error(f"Bayeux {message['channel']}: {response.status_code} {response.text[:200]}")
            return []
        replies: list[dict[str, Any]] = response.json()
        for reply in replies:
            if reply.get("channel") == self.channel:
                replay_id = int(reply["data"]["event"]["replayId"])
                self.bayeux.received.append((replay_id, time.monotonic()))
                self.arrived.set()
            elif reply.get("successful") is not True:
                self.error(f"Bayeux {message['channel']}: {orjson.dumps(reply)[:200]!r}")
        return replies

    async def long_poll(self, http: httpx.AsyncClient, subscribed: asyncio.Event) -> None:
        replies = await self.bayeux_post(http, bayeux_http.handshake())
        if not replies:
            return
        client_id = replies[0]["clientId"]
        await self.bayeux_post(http, bayeux_http.connect(client_id))
        await self.bayeux_post(http, bayeux_http.subscribe(client_id, self.channel))
        subscribed.set()
        while not self.stopping.is_set():
            await self.bayeux_post(http, bayeux_http.connect(client_id))
        # Held connects end on their own: one more collects what arrived meanwhile.
        await self.bayeux_post(http, bayeux_http.connect(client_id, timeout_ms=0))

    # -- the run -------------------------------------------------------------------------------

    async def guarded(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        """`work`, with a failure of its own recorded as one of B's errors."""
        try:
            await work
        except httpx.HTTPError as failure:
            if not self.stopping.is_set():
                self.error(f"{name}: {failure!r}")

    async def until(self, condition: Callable[[], bool]) -> None:
        """Until `condition` holds, looking again at each delivery."""
        while not condition():
            self.arrived.clear()
            await self.arrived.wait()

    def drained(self) -> bool:
        """Both subscribers have every acknowledged event."""
        expected = set(self.sent)
        return all(expected <= {r for r, _ in s.received} for s in (self.sse, self.bayeux))

    def client(self) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(
            local_address=ADDRESS, limits=httpx.Limits(max_connections=4)
        )
        return httpx.AsyncClient(base_url=self.base_url, timeout=_TIMEOUT, transport=transport)

    async def run(self, stop: asyncio.Event) -> Report:
        async with (
            self.client() as sse_http,
            self.client() as poll_http,
            self.client() as pub_http,
            self.client() as token_http,
        ):
            opened, subscribed = asyncio.Event(), asyncio.Event()
            tasks = [
                asyncio.create_task(self.guarded("SSE", self.stream(sse_http, opened))),
                asyncio.create_task(self.guarded("Bayeux", self.long_poll(poll_http, subscribed))),
            ]
            async with asyncio.timeout(_READY_S):
                await opened.wait()
                await subscribed.wait()
                publishing = asyncio.create_task(self.publisher(pub_http))
                await self.until(lambda: bool(self.sse.received and self.bayeux.received))
            ready = time.monotonic()
            asking = asyncio.create_task(self.guarded("token", self.ask_for_tokens(token_http)))
            print("ready", flush=True)
            await stop.wait()
            finished = time.monotonic()
            self.stopping.set()
            await asyncio.gather(publishing, asking)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_DRAIN_S):
                    await self.until(self.drained)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        subscribers = {
            "sse": self.sse.report(self.sent, ready, finished),
            "bayeux": self.bayeux.report(self.sent, ready, finished),
        }
        return Report(
            len(self.sent), self.errors, subscribers, _percentiles(self.publish_times), self.tokens
        )


async def _main(settings: dict[str, Any]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stop_requested() -> None:  # a line, or the parent gone (end of input)
        loop.remove_reader(sys.stdin.fileno())
        stop.set()

    loop.add_reader(sys.stdin.fileno(), stop_requested)
    workload = _Workload(settings)
    report = await workload.run(stop)
    sys.stdout.write(orjson.dumps(report, default=vars).decode() + "\n")
    sys.stdout.flush()


# -- driving it from a test ----------------------------------------------------------------------


class Neighbour:
    """A running B workload; `stop()` ends it and returns its report."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process

    async def stop(self) -> Report:
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._process.stdin.write(b"stop\n")
        await self._process.stdin.drain()
        async with asyncio.timeout(_DRAIN_S + 60):
            line = await self._process.stdout.readline()
            await self._process.wait()
        if not line:
            raise RuntimeError("the neighbour's workload ended without a report")
        return Report.from_json(orjson.loads(line))


@asynccontextmanager
async def neighbour(
    base_url: str, client: TenantClient, channel: str, rate: float = 20.0
) -> AsyncIterator[Neighbour]:
    """B's workload, as `client`, running against `base_url`, steady once this yields."""
    settings = {
        "base_url": base_url,
        "token": client.token,
        "client_id": client.client_id,
        "client_secret": client.client_secret,
        "channel": channel,
        "rate": rate,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.hostile.neighbour",
        orjson.dumps(settings).decode(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(_READY_S + 10):
            line = await process.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"the neighbour's workload did not start: {line!r}")
        yield Neighbour(process)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


if __name__ == "__main__":
    asyncio.run(_main(orjson.loads(sys.argv[1])))
