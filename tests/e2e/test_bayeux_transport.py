"""Bayeux transport edges: WebSocket refused, body limit, content types (lines 2, 3, 32, 40)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e.server import RunningServer, run_server


def test_line_40_a_websocket_upgrade_is_refused_promptly(server: RunningServer) -> None:
    address = urlsplit(server.base_url)
    assert address.hostname is not None
    assert address.port is not None
    request = (
        "GET /cometd/58.0 HTTP/1.1\r\n"
        f"Host: {address.hostname}:{address.port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    with socket.create_connection((address.hostname, address.port), timeout=10) as connection:
        connection.sendall(request.encode())
        status_line = connection.recv(4096).split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 ")
    assert not status_line.startswith(b"HTTP/1.1 101")


def test_line_32_a_body_over_32_kib_is_refused_with_413_and_a_json_array(
    server: RunningServer, token: str
) -> None:
    message = {"channel": "/meta/handshake", "version": "1.0", "pad": "x" * 33_000}
    response = httpx.post(
        server.base_url + "/cometd/58.0",
        json=[message],
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 413
    assert response.json()[0]["successful"] is False


def test_line_32_a_batch_just_under_the_limit_is_accepted(
    server: RunningServer, token: str
) -> None:
    message = {"channel": "/meta/handshake", "version": "1.0", "pad": "x" * 30_000}
    response = httpx.post(
        server.base_url + "/cometd/58.0",
        json=[message],
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200
    assert response.json()[0]["successful"] is True


def test_lines_2_3_form_bodies_and_charset_json_are_accepted_and_replies_are_json_arrays(
    server: RunningServer, token: str
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    form = httpx.post(
        server.base_url + "/cometd/58.0/handshake",
        data={"message": '{"channel":"/meta/handshake","version":"1.0","id":"f"}'},
        headers=headers,
    )
    charset = httpx.post(
        server.base_url + "/cometd/58.0",
        content=b'{"channel":"/meta/handshake","version":"1.0","id":7}',
        headers={**headers, "Content-Type": "application/json;charset=UTF-8"},
    )
    for response in (form, charset):
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json;charset=UTF-8"
        assert response.json()[0]["successful"] is True
    assert form.json()[0]["id"] == "f"
    assert charset.json()[0]["id"] == 7


def test_line_3_malformed_bodies_get_a_json_array_never_html(
    server: RunningServer, token: str
) -> None:
    response = httpx.post(
        server.base_url + "/cometd/58.0",
        content=b"<html>",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert response.headers["content-type"] == "application/json;charset=UTF-8"
    [reply] = response.json()
    assert reply["successful"] is False
    assert reply["channel"]


def test_responses_announce_the_keep_alive_timeout(server: RunningServer) -> None:
    """Pooled clients (Node's http.Agent) retire a connection before the server's idle timeout
    when told it; without this, a request sent on a just-closed connection fails."""
    response = httpx.get(server.base_url + "/healthz")
    assert response.headers["keep-alive"] == "timeout=120"


def _handshake(server: RunningServer, path: str, authorization: str) -> httpx.Response:
    return httpx.post(
        server.base_url + path,
        json=[{"channel": "/meta/handshake", "version": "1.0", "id": "1"}],
        headers={"Authorization": authorization},
    )


@pytest.mark.parametrize(
    "path",
    [
        "/cometd/58.0",
        "/cometd/58.0/handshake",
        "/cometd/58.0/meta/x",
        "/cometd/replay/36.0",
        "/cometd",
    ],
)
def test_line_1_every_cometd_path_form_is_handled_alike(
    server: RunningServer, token: str, path: str
) -> None:
    response = _handshake(server, path, f"Bearer {token}")
    assert response.status_code == 200
    assert response.json()[0]["successful"] is True


@pytest.mark.parametrize("scheme", ["Bearer ", "bearer ", "OAuth ", "OAUTH ", ""])
def test_line_5_bearer_oauth_and_bare_tokens_are_accepted(
    server: RunningServer, token: str, scheme: str
) -> None:
    response = _handshake(server, "/cometd/58.0", scheme + token)
    assert response.json()[0]["successful"] is True


def test_line_17_a_whole_session_works_without_cookies(server: RunningServer, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    url = server.base_url + "/cometd/58.0"
    with httpx.Client(headers=headers, cookies=None) as client:
        handshake = client.post(url, json=[{"channel": "/meta/handshake", "version": "1.0"}])
        client_id = handshake.json()[0]["clientId"]
        client.cookies.clear()
        steps = [
            {"channel": "/meta/connect", "clientId": client_id, "connectionType": "long-polling"},
            {"channel": "/meta/subscribe", "clientId": client_id, "subscription": "/event/C__e"},
            {"channel": "/meta/disconnect", "clientId": client_id},
        ]
        replies = [client.post(url, json=[step]).json()[0] for step in steps]
    assert "set-cookie" not in handshake.headers
    assert [reply["successful"] for reply in replies] == [True, True, True]


async def test_an_abandoned_held_connect_loses_nothing() -> None:
    """A client (or a proxy) gives up on a held connect; the next event must not be spent on
    the dead response: the client's next connect gets it."""
    with run_server({"REPLAYBUS_BAYEUX_TIMEOUT": "60s"}) as server:
        url = server.base_url + "/cometd/58.0"
        headers = {"Authorization": f"Bearer {server.token()}"}
        async with httpx.AsyncClient(headers=headers, timeout=30) as client:
            handshake = await client.post(url, json=[{"channel": "/meta/handshake"}])
            client_id = handshake.json()[0]["clientId"]
            connect = {
                "channel": "/meta/connect",
                "clientId": client_id,
                "connectionType": "long-polling",
            }
            subscribe = {
                "channel": "/meta/subscribe",
                "clientId": client_id,
                "subscription": "/event/Abandon__e",
            }
            await client.post(url, json=[connect, subscribe])
            async with httpx.AsyncClient(headers=headers, timeout=30) as doomed:
                held = asyncio.create_task(doomed.post(url, json=[connect]))
                await server.wait_for_held_connects(1)
                held.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await held
            await server.wait_for_held_connects(0)
            published = await client.post(
                server.base_url + "/v1/events/event/Abandon__e", json={"n": 1}
            )
            replies = (await client.post(url, json=[{**connect, "advice": {"timeout": 0}}])).json()
    delivered = [r["data"]["event"]["replayId"] for r in replies if "data" in r]
    assert delivered == [published.json()["replayId"]]


def test_one_connect_and_one_handshake_per_request(server: RunningServer, token: str) -> None:
    url = server.base_url + "/cometd/58.0"
    headers = {"Authorization": f"Bearer {token}"}
    handshakes = httpx.post(url, json=[{"channel": "/meta/handshake"}] * 3, headers=headers).json()
    client_id = handshakes[0]["clientId"]
    connect = {"channel": "/meta/connect", "clientId": client_id, "connectionType": "long-polling"}
    connects = httpx.post(url, json=[connect] * 3, headers=headers).json()
    assert [r["successful"] for r in handshakes] == [True, False, False]
    assert [r["successful"] for r in connects] == [True, False, False]
