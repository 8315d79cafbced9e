"""Bad input gets its status and JSON error, and a concurrent subscriber sees no disturbance."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import orjson
import pytest
from httpx_sse import aconnect_sse
from joserfc import jwt
from joserfc.jwk import ECKey

from tests.e2e.server import RunningServer
from tests.e2e.sse import channel_name, dispatched, publish


@dataclass(frozen=True)
class BadRequest:
    name: str
    method: str
    path: str
    status: int
    error: str
    body: bytes | None = None
    headers: Callable[[str, str, str], dict[str, str]] = lambda token, expired, narrow: {
        "Authorization": f"Bearer {token}"
    }


def _expired_token(signing_key_pem: str) -> str:
    key = ECKey.import_key(signing_key_pem)
    key.ensure_kid()
    now = int(time.time())
    claims = {
        "iss": "replaybus",
        "aud": "replaybus",
        "sub": "e2e-client",
        "tid": "default",
        "scope": "publish subscribe",
        "iat": now - 7200,
        "exp": now - 3600,
    }
    return jwt.encode({"alg": "ES256", "kid": key.kid}, claims, key)


BAD_REQUESTS = [
    BadRequest(
        "no token", "POST", "/v1/events/event/E__e", 401, "missing_token", b"{}", lambda t, e, n: {}
    ),
    BadRequest(
        "garbage token",
        "POST",
        "/v1/events/event/E__e",
        401,
        "invalid_token",
        b"{}",
        lambda t, e, n: {"Authorization": "Bearer not-a-jwt"},
    ),
    BadRequest(
        "expired token",
        "POST",
        "/v1/events/event/E__e",
        401,
        "expired_token",
        b"{}",
        lambda t, e, n: {"Authorization": f"Bearer {e}"},
    ),
    BadRequest(
        "subscribe-only token publishing",
        "POST",
        "/v1/events/event/E__e",
        403,
        "insufficient_scope",
        b"{}",
        lambda t, e, n: {"Authorization": f"Bearer {n}"},
    ),
    BadRequest("malformed JSON", "POST", "/v1/events/event/E__e", 400, "malformed_json", b'{"a": '),
    BadRequest("empty body", "POST", "/v1/events/event/E__e", 400, "malformed_json", b""),
    BadRequest(
        "payload not an object", "POST", "/v1/events/event/E__e", 400, "invalid_body", b"[1, 2]"
    ),
    BadRequest(
        "2 MiB event",
        "POST",
        "/v1/events/event/E__e",
        413,
        "event_too_large",
        orjson.dumps({"blob": "x" * (2 * 1024 * 1024)}),
    ),
    BadRequest(
        "request over the body limit",
        "POST",
        "/v1/events/event/E__e",
        413,
        "request_too_large",
        orjson.dumps([{"blob": "x" * (1024 * 1024 - 100)}] * 9),
    ),
    BadRequest(
        "invalid channel name", "POST", "/v1/events/event/Bad%20Name", 422, "invalid_channel", b"{}"
    ),
    BadRequest("wildcard publish", "POST", "/v1/events/event/*", 422, "invalid_channel", b"{}"),
    BadRequest(
        "meta channel publish",
        "POST",
        "/v1/events/meta/handshake",
        403,
        "channel_not_publishable",
        b"{}",
    ),
    BadRequest(
        "bad replayId", "GET", "/v1/stream/event/E__e?replayId=abc", 400, "invalid_replay_id"
    ),
    BadRequest(
        "replayId out of range",
        "GET",
        "/v1/stream/event/E__e?replayId=-7",
        400,
        "invalid_replay_id",
    ),
    BadRequest(
        "stream of an unknown channel", "GET", "/v1/stream/meta/connect", 404, "unknown_channel"
    ),
    BadRequest("history limit", "GET", "/v1/events/event/E__e?limit=0", 400, "invalid_parameter"),
    BadRequest(
        "non-ASCII digit limit",
        "GET",
        "/v1/events/event/E__e?limit=%C2%B2",
        400,
        "invalid_parameter",
    ),
    BadRequest("no such path", "GET", "/v1/nothing-here", 404, "not_found"),
    BadRequest("wrong method", "DELETE", "/v1/events/event/E__e", 405, "method_not_allowed"),
]


@pytest.fixture(scope="module")
def narrow_token(server: RunningServer) -> str:
    return server.token(scope="subscribe")


@pytest.mark.parametrize("bad", BAD_REQUESTS, ids=[bad.name for bad in BAD_REQUESTS])
async def test_bad_request_gets_its_error_and_others_are_undisturbed(
    bad: BadRequest,
    server: RunningServer,
    token: str,
    narrow_token: str,
    signing_key_pem: str,
) -> None:
    channel = channel_name()
    auth = {"Authorization": f"Bearer {token}"}
    async with (
        httpx.AsyncClient(timeout=30) as client,
        aconnect_sse(
            client, "GET", f"{server.base_url}/v1/stream{channel}", headers=auth
        ) as source,
    ):
        events = dispatched(source)
        before = await publish(client, server.base_url, token, channel, {"step": "before"})
        assert int((await anext(events)).id) == before["replayId"]

        headers = bad.headers(token, _expired_token(signing_key_pem), narrow_token)
        response = await client.request(
            bad.method, server.base_url + bad.path, content=bad.body, headers=headers
        )
        assert response.status_code == bad.status, response.text
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert body["error"] == bad.error
        assert isinstance(body["message"], str)
        assert body["message"]
        if bad.status == 401:
            assert response.headers["www-authenticate"].startswith("Bearer")

        after = await publish(client, server.base_url, token, channel, {"step": "after"})
        message = await anext(events)
        assert int(message.id) == after["replayId"]
        assert message.json()["payload"] == {"step": "after"}
