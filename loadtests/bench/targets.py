"""How the generator drives each server: what a publish request looks like, and how to
subscribe over SSE or Bayeux. Requests are prepared here as raw HTTP/1.1 text; the generator
(loadtests/gen) adds Content-Length and the numbered, time-stamped payload."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from loadtests.bench.peers import FayePeer, NchanPeer
from loadtests.bench.servers import Server
from tests.harness.nginx import descendants

__all__ = [
    "Target",
    "faye_target",
    "nchan_target",
    "publish_and_stream",
    "publish_only",
    "replaybus_target",
]

_CLIENT = "%CLIENT%"  # the generator puts the handshake's clientId here


@dataclass
class Target:
    """One server as the generator sees it. `pids` are the processes whose CPU time is summed
    (the first is the one whose memory is read); `publish_head` is the request line and headers
    of a publish, its body `prefix` + payload + `suffix`; `sse(start)` is the whole GET of an
    event stream from `start` (-1: new events, -2: everything retained); `bayeux` the
    long-polling messages (None where the server has no such transport)."""

    name: str
    base_url: str
    pids: tuple[int, ...]
    publish_head: str
    prefix: str = ""
    suffix: str = ""
    sse: Callable[[int], str] | None = None
    bayeux: dict[str, str] | None = None
    notes: list[str] = field(default_factory=list)

    def spec(self) -> dict[str, Any]:
        """What every generator mode needs to know about this server."""
        return {
            "addr": urlsplit(self.base_url).netloc,
            "publish_head": self.publish_head,
            "prefix": self.prefix,
            "suffix": self.suffix,
            "server_pids": list(self.pids),
        }


def head(base_url: str, method: str, path: str, headers: Mapping[str, str] | None = None) -> str:
    """A request's line and header lines (each ending in CRLF), with no blank line yet."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {urlsplit(base_url).netloc}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return "\r\n".join(lines) + "\r\n"


def _bayeux(base_url: str, path: str, headers: Mapping[str, str], channel: str) -> dict[str, str]:
    """Plain Bayeux long-polling (the builders live with the Faye peer, which speaks nothing
    else): handshake, subscribe to `channel`, then held connects."""

    def compact(messages: list[dict[str, Any]]) -> str:
        return json.dumps(messages, separators=(",", ":"))

    return {
        "head": head(base_url, "POST", path, headers),
        "handshake": compact(FayePeer.handshake()),
        "subscribe": compact(FayePeer.subscribe(_CLIENT, channel)),
        "connect": compact(FayePeer.connect(_CLIENT)),
    }


def publish_only(server: Server, channel: str) -> Target:
    headers = {"Content-Type": "application/json"}
    publish = head(server.base_url, "POST", f"/v1/events{channel}", headers)
    return Target(server.name, server.base_url, (server.pid,), publish)


def publish_and_stream(server: Server, channel: str, stream_path: str = "/stream") -> Target:
    """A server with just a publish endpoint and an event stream at `stream_path` (the
    do-nothing server and the Starlette fan-out app, whose streams carry what is published;
    the bare Starlette app, whose stream stays idle)."""
    target = publish_only(server, channel)
    target.sse = lambda start: head(server.base_url, "GET", stream_path) + "\r\n"
    return target


def replaybus_target(server: Server, channel: str) -> Target:
    """REST publish, SSE and Bayeux with a bearer token. CPU is summed over the server and its
    worker processes (asked after the token, which a worker answers)."""
    auth = {"Authorization": f"Bearer {server.token()}"}
    json_headers = {**auth, "Content-Type": "application/json"}

    def sse(start: int) -> str:
        return head(server.base_url, "GET", f"/v1/stream{channel}?replayId={start}", auth) + "\r\n"

    return Target(
        server.name,
        server.base_url,
        (server.pid, *descendants(server.pid)),
        head(server.base_url, "POST", f"/v1/events{channel}", json_headers),
        sse=sse,
        bayeux=_bayeux(server.base_url, "/cometd/58.0", json_headers, channel),
    )


def nchan_target(peer: NchanPeer, channel: str) -> Target:
    """Publish by POSTing the payload; subscribe over EventSource. "New events" starts from the
    channel's last message id, read when the request is made (a bare subscription can miss the
    first messages: peers/README)."""
    subscribe_path = peer.subscribe_path(channel)

    def sse(start: int) -> str:
        headers = peer.replay_headers() if start == -2 else peer.live_headers(channel)
        return head(peer.base_url, "GET", subscribe_path, headers) + "\r\n"

    return Target(
        "Nchan+Redis",
        peer.base_url,
        (peer.pid,),
        head(
            peer.base_url, "POST", peer.publish_path(channel), {"Content-Type": "application/json"}
        ),
        sse=sse,
    )


def faye_target(peer: FayePeer, channel: str) -> Target:
    """Publish a Bayeux message by POST (Faye needs no handshake for it); subscribe with
    handshake, subscribe and held connects. Faye keeps no history: no replay."""
    return Target(
        "Faye+Redis",
        peer.base_url,
        (peer.pid,),
        head(peer.base_url, "POST", FayePeer.bayeux_path, FayePeer.headers),
        prefix='[{"channel":' + json.dumps(channel) + ',"data":',
        suffix="}]",
        bayeux=_bayeux(peer.base_url, FayePeer.bayeux_path, FayePeer.headers, channel),
    )
