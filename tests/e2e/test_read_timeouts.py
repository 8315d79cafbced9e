"""Read deadlines of a real `replaybus serve` process, over raw sockets where the client's pace
matters: slow headers close the connection, a slow body gets 408, and a body trickled after its
answer cannot hold a connection open. The deadlines apply to reading requests only: a held
long-poll and an idle SSE stream outlive them."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from tests.e2e.server import RunningServer, run_server
from tests.e2e.sse import channel_name

#: Read deadlines short enough for a test, long enough for any request sent at once; a held
#: /meta/connect three times as long.
DEADLINE_S = 1.0
HOLD_S = 3.0
TIMEOUTS = {
    "REPLAYBUS_HEADER_TIMEOUT": f"{DEADLINE_S:g}s",
    "REPLAYBUS_BODY_TIMEOUT": f"{DEADLINE_S:g}s",
    "REPLAYBUS_BAYEUX_TIMEOUT": f"{HOLD_S:g}s",
}
#: A safety net for a socket read, far above the deadlines under test.
SOCKET_BOUND_S = 30.0
#: The pace of a client that sends a byte at a time.
TRICKLE_S = 0.05


@pytest.fixture(scope="module")
def slow_server() -> Iterator[RunningServer]:
    with run_server(TIMEOUTS) as server:
        yield server


def _connect(server: RunningServer) -> socket.socket:
    address = urlsplit(server.base_url)
    assert address.hostname is not None
    assert address.port is not None
    return socket.create_connection((address.hostname, address.port), timeout=SOCKET_BOUND_S)


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset, which a client
    still sending after the close gets, counts as closed)."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One whole response (with a Content-Length) from a connection that stays open."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection mid-response: {received!r}"
        received += chunk
    status, headers, body = _split_response(received)
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection mid-response: {received!r}"
        body += chunk
    return status, headers, body


def _trickle(sock: socket.socket, data: bytes) -> int:
    """Send `data` a byte at a time; how many bytes went out before the server closed the
    connection (all of them if it never did)."""
    for sent, byte in enumerate(data):
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return sent
        time.sleep(TRICKLE_S)  # the slow client under test, not a wait for the server
    return len(data)


def _split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


# -- slow headers ----------------------------------------------------------------------------


def test_a_connection_that_never_sends_its_headers_is_closed(slow_server: RunningServer) -> None:
    with _connect(slow_server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: replaybus\r\n")  # and never the end
        assert _read_until_closed(sock) == b""


def test_a_connection_that_sends_nothing_is_closed(slow_server: RunningServer) -> None:
    with _connect(slow_server) as sock:
        assert _read_until_closed(sock) == b""


def test_headers_sent_a_byte_at_a_time_are_cut_off(slow_server: RunningServer) -> None:
    # 1 KiB of headers at 20 bytes a second would take 50 s; the server closes after 1 s.
    request = b"GET /healthz HTTP/1.1\r\nHost: replaybus\r\nX-Slow: " + b"a" * 1000 + b"\r\n\r\n"
    with _connect(slow_server) as sock:
        sent = _trickle(sock, request)
        assert sent < len(request)
        assert _read_until_closed(sock) == b""


def test_a_prompt_client_keeps_its_connection_between_requests(
    slow_server: RunningServer,
) -> None:
    with _connect(slow_server) as sock:
        for _ in range(2):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: replaybus\r\n\r\n")
            status, _, body = _read_response(sock)
            assert (status, body) == (200, b'{"status":"ok"}')


# -- slow bodies -----------------------------------------------------------------------------


def _post_head(path: str, length: int, token: str | None = None) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: replaybus",
        "Content-Type: application/json",
        f"Content-Length: {length}",
    ]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_a_publish_body_that_stalls_gets_408_and_the_connection_closes(
    slow_server: RunningServer,
) -> None:
    token = slow_server.token()
    with _connect(slow_server) as sock:
        sock.sendall(_post_head("/v1/events/event/Slow__e", 100, token) + b'{"n": ')
        status, headers, body = _split_response(_read_until_closed(sock))
    assert status == 408
    assert headers["connection"] == "close"
    assert orjson.loads(body)["error"] == "request_timeout"
    history = httpx.get(
        slow_server.base_url + "/v1/events/event/Slow__e",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert history.json()["events"] == []


def test_a_bayeux_body_that_stalls_gets_a_bayeux_408(slow_server: RunningServer) -> None:
    with _connect(slow_server) as sock:
        sock.sendall(_post_head("/cometd/58.0", 100, slow_server.token()) + b"[{")
        status, _, body = _split_response(_read_until_closed(sock))
    assert status == 408
    [reply] = orjson.loads(body)
    assert reply["successful"] is False
    assert reply["error"].startswith("408::")


def test_a_token_request_body_that_stalls_gets_408(slow_server: RunningServer) -> None:
    with _connect(slow_server) as sock:
        head = _post_head("/services/oauth2/token", 200).replace(
            b"application/json", b"application/x-www-form-urlencoded"
        )
        sock.sendall(head + b"grant_type=client_")
        status, headers, body = _split_response(_read_until_closed(sock))
    assert status == 408
    assert headers["connection"] == "close"
    refusal = orjson.loads(body)
    assert refusal["error"] == "invalid_request"
    assert "did not arrive within 1 s" in refusal["error_description"]


def test_a_body_trickled_after_its_answer_does_not_hold_the_connection(
    slow_server: RunningServer,
) -> None:
    # Refused before its body is read (no token), the request keeps sending its body a byte at
    # a time: every byte would push the keep-alive timeout back.
    body = b"x" * 1000  # 50 s at the trickle's pace
    with _connect(slow_server) as sock:
        sock.sendall(_post_head("/v1/events/event/Slow__e", len(body)))
        status, _, _ = _read_response(sock)
        assert status == 401
        sent = _trickle(sock, body)
        assert sent < len(body)
        assert _read_until_closed(sock) == b""


# -- long-lived answers ----------------------------------------------------------------------


def _bayeux(sock: socket.socket, token: str, messages: list[dict[str, object]]) -> list[Any]:
    body = orjson.dumps(messages)
    sock.sendall(_post_head("/cometd/58.0", len(body), token) + body)
    status, _, reply = _read_response(sock)
    assert status == 200, reply
    replies: list[Any] = orjson.loads(reply)
    return replies


def test_a_held_connect_outlives_the_read_deadlines_and_its_connection_is_reused(
    slow_server: RunningServer,
) -> None:
    token = slow_server.token()
    with _connect(slow_server) as sock:
        [handshake] = _bayeux(
            sock,
            token,
            [
                {
                    "channel": "/meta/handshake",
                    "version": "1.0",
                    "supportedConnectionTypes": ["long-polling"],
                }
            ],
        )
        client_id = handshake["clientId"]
        connect = {
            "channel": "/meta/connect",
            "clientId": client_id,
            "connectionType": "long-polling",
        }
        _bayeux(sock, token, [connect])  # the first connect answers at once
        started = time.monotonic()
        [held] = _bayeux(sock, token, [connect])  # nothing to deliver: held for HOLD_S
        held_for = time.monotonic() - started
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: replaybus\r\n\r\n")
        status, _, body = _read_response(sock)

    assert held["successful"] is True, held
    assert held_for >= DEADLINE_S  # it was held past the read deadlines (HOLD_S, in fact)
    assert (status, body) == (200, b'{"status":"ok"}')  # the same connection, still open


def test_an_sse_stream_idle_past_the_read_deadlines_still_delivers(
    slow_server: RunningServer,
) -> None:
    token = slow_server.token()
    channel = channel_name()
    head = (
        f"GET /v1/stream{channel}?replayId=-2 HTTP/1.1\r\nHost: replaybus\r\n"
        f"Accept: text/event-stream\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    with _connect(slow_server) as sock:
        sock.sendall(head.encode())
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            assert chunk, f"the server closed the stream: {received!r}"
            received += chunk
        status, headers, _ = _split_response(received)
        time.sleep(HOLD_S)  # the stream idles (no heartbeat is due yet) past every deadline
        published = httpx.post(
            slow_server.base_url + "/v1/events" + channel,
            json={"after": "idle"},
            headers={"Authorization": f"Bearer {token}"},
        )
        while b'"after":"idle"' not in received:
            chunk = sock.recv(65536)
            assert chunk, f"the server closed the stream: {received!r}"
            received += chunk

    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    assert published.status_code == 201, published.text
    assert f"id: {published.json()['replayId']}".encode() in received
