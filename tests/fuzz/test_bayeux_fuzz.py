"""Hypothesis over Bayeux message arrays against a real server: meta and other channels, wrong
types, huge and deeply nested values, missing fields, many messages per request, form and
JSON bodies. No request gets a 5xx, every message gets its reply, and afterwards no session is
stuck: every held connect has ended and a normal handshake, subscribe, connect, publish and
delivery still works.

Deterministic: derandomized, no example database.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.server import RunningServer, run_server
from tests.harness import bayeux_http

_HOLD_S = 0.2  # REPLAYBUS_BAYEUX_TIMEOUT: a fuzzed connect that is held ends this soon
_MAX_REQUEST = 32 * 1024  # REPLAYBUS_BAYEUX_MAX_REQUEST_SIZE, its default
_CHANNEL = "/event/Fuzz__e"
_EXAMPLES = 150
_POOL = 8
#: Sessions handshook before the fuzzing (some connected and subscribed), so fuzzed messages
#: can name real clientIds; filled by the fixture, read lazily by the strategies.
_SESSIONS: list[str] = []
_TOKENS: list[str] = []


@pytest.fixture(scope="module")
def bayeux_server() -> Iterator[RunningServer]:
    env = {
        "REPLAYBUS_BAYEUX_TIMEOUT": f"{int(_HOLD_S * 1000)}ms",
        "REPLAYBUS_BAYEUX_RECONNECT_WINDOW": "10m",  # the pool's sessions outlive the fuzzing
    }
    with run_server(env) as server:
        _TOKENS.append(server.token())
        with httpx.Client(base_url=server.base_url, headers=_auth(_TOKENS[0])) as http:
            _SESSIONS.extend(_session(http, connected=n % 2 == 1) for n in range(_POOL))
        yield server
        _SESSIONS.clear()
        _TOKENS.clear()


def _session(http: httpx.Client, *, connected: bool) -> str:
    """A new session; a connected one is subscribed to the fuzzed channel."""
    client_id = _handshake(http)
    if connected:
        _meta(http, bayeux_http.connect(client_id))
        _meta(http, bayeux_http.subscribe(client_id, _CHANNEL))
    return client_id


def _replace_disconnected(base_url: str, sent: object, replies: object) -> None:
    """A fuzzed /meta/disconnect that ended a session of the pool: a new one takes its place."""
    if not isinstance(sent, list) or not isinstance(replies, list):
        return
    answered = [reply for reply in replies if isinstance(reply, dict) and "successful" in reply]
    for message, reply in zip(sent, answered, strict=False):
        client_id = message.get("clientId") if isinstance(message, dict) else None
        ended = message.get("channel") == "/meta/disconnect" and reply["successful"] is True
        if ended and client_id in _SESSIONS:
            index = _SESSIONS.index(client_id)
            with httpx.Client(base_url=base_url, headers=_auth(_TOKENS[0])) as http:
                _SESSIONS[index] = _session(http, connected=index % 2 == 1)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _post(http: httpx.Client, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    response = http.post(bayeux_http.PATH, json=messages)
    assert response.status_code == 200, response.text
    replies: list[dict[str, Any]] = response.json()
    return replies


def _meta(http: httpx.Client, message: dict[str, Any]) -> list[dict[str, Any]]:
    """The replies to `message`, whose own reply (the last) must be successful."""
    replies = _post(http, [message])
    assert replies[-1]["successful"] is True, replies
    return replies


def _handshake(http: httpx.Client) -> str:
    return str(_meta(http, bayeux_http.handshake())[0]["clientId"])


# -- strategies -------------------------------------------------------------------------------

_ENCODABLE = st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what JSON encoders write
_SCALARS = (
    st.none()
    | st.booleans()
    | _ENCODABLE
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
_META = [
    "/meta/handshake",
    "/meta/connect",
    "/meta/subscribe",
    "/meta/unsubscribe",
    "/meta/disconnect",
    "/meta/other",
]
_NAMES = st.sampled_from(
    [
        _CHANNEL,
        "/event/*",
        "/event/**",
        "/event/Other__e?x=1",
        "/meta/connect",
        "/meta/*",
        "/service/echo",
        "/other/x",
        "event/NoSlash",
        "/event//empty",
        "/event/" + "x" * 300,
        "",
    ]
)
# Mostly what a server acts on (meta channels, live sessions), so the fuzzing gets past
# "unknown client" into subscriptions and held connects.
_CHANNELS = st.one_of(
    st.sampled_from(_META), st.sampled_from(_META), _NAMES, st.text(max_size=20), _JSON
)
_LIVE = st.integers(min_value=0, max_value=_POOL - 1).map(lambda index: _SESSIONS[index])
_CLIENT_IDS = st.one_of(_LIVE, _LIVE, _LIVE, st.text(max_size=30), _JSON)
_POSITIONS = (
    st.sampled_from([-1, -2, 0, 2**53, 2**63, -3, "-2", " 5 ", "x", 1.5, True, None]) | _ENCODABLE
)
_SUBSCRIPTIONS = _NAMES | st.lists(_NAMES, max_size=5) | _JSON
_EXTS = (
    st.fixed_dictionaries(
        {},
        optional={
            "replay": st.dictionaries(_NAMES, _POSITIONS, max_size=3) | _JSON,
            "ack": _POSITIONS | _JSON,
        },
    )
    | _JSON
)
_ADVICE = (
    st.fixed_dictionaries({}, optional={"timeout": st.sampled_from([0, _HOLD_S * 1000]) | _JSON})
    | _JSON
)
_FIELDS = {
    "id": _JSON,
    "subscription": _SUBSCRIPTIONS,
    "ext": _EXTS,
    "advice": _ADVICE,
    "connectionType": st.sampled_from(["long-polling", "websocket"]) | _JSON,
    "supportedConnectionTypes": st.lists(
        st.sampled_from(["long-polling", "callback-polling"]) | _JSON, max_size=3
    )
    | _JSON,
    "version": st.sampled_from(["1.0"]) | _JSON,
    "data": _JSON,
    "extra": _JSON,
}
#: Well-formed requests of live sessions with fuzzed details, and anything at all.
_PLAUSIBLE = st.fixed_dictionaries(
    {
        "channel": st.sampled_from(["/meta/connect", "/meta/subscribe", "/meta/unsubscribe"]),
        "clientId": _LIVE,
    },
    optional={
        "subscription": _NAMES | st.lists(_NAMES, max_size=3),
        "ext": _EXTS,
        "advice": _ADVICE,
        "connectionType": st.just("long-polling"),
        "id": st.text(max_size=4),
    },
)
_MESSAGES = st.one_of(
    _PLAUSIBLE,
    _PLAUSIBLE,
    st.fixed_dictionaries({"channel": _CHANNELS, "clientId": _CLIENT_IDS}, optional=_FIELDS),
    st.fixed_dictionaries({}, optional={"channel": _CHANNELS, "clientId": _CLIENT_IDS, **_FIELDS}),
)


def _json_body(value: object) -> tuple[bytes, str]:
    return orjson.dumps(value), "application/json"


def _form_body(value: object) -> tuple[bytes, str]:
    return b"message=" + quote(
        orjson.dumps(value).decode()
    ).encode(), "application/x-www-form-urlencoded"


def _many(message: dict[str, Any]) -> list[dict[str, Any]]:
    """As many copies of a small message as fit in a request."""
    size = len(orjson.dumps(message)) + 1
    return [message] * max(1, (_MAX_REQUEST - 64) // size)


_BODIES = st.one_of(
    st.lists(_MESSAGES, min_size=1, max_size=12).map(_json_body),
    _MESSAGES.map(_json_body),
    st.lists(_MESSAGES, min_size=1, max_size=3).map(_form_body),
    _MESSAGES.filter(lambda m: len(orjson.dumps(m)) < 300).map(_many).map(_json_body),
    # Huge and deeply nested values, and bodies over the size limit.
    st.integers(min_value=1, max_value=3000).map(
        lambda depth: (
            b'[{"channel":"/meta/connect","data":' + b"[" * depth + b"]" * depth + b"}]",
            "application/json",
        )
    ),
    st.integers(min_value=_MAX_REQUEST - 200, max_value=_MAX_REQUEST + 200).map(
        lambda size: _json_body([{"channel": "/meta/handshake", "data": "x" * size}])
    ),
    # Numbers beyond 64 bits, which the decoder refuses.
    st.sampled_from([b"1" * 30, b"1e400", b"-" + b"9" * 20]).map(
        lambda number: (b'[{"channel":"/meta/handshake","id":' + number + b"}]", "application/json")
    ),
    # Not a message array at all.
    _JSON.map(_json_body),
    st.binary(max_size=64).map(lambda raw: (raw, "application/json")),
    st.binary(max_size=64).map(lambda raw: (raw, "application/x-www-form-urlencoded")),
)
_AUTHORIZATION = st.one_of(
    st.deferred(lambda: st.sampled_from(_TOKENS)).map(lambda token: f"Bearer {token}"),
    st.sampled_from(["", "Bearer", "Bearer x.y.z", "Basic Zm9vOmJhcg==", "OAuth " + "a" * 2000]),
)
_ERROR = re.compile(r"[0-9]{3}:")


def _check_replies(status: int, body: bytes, sent: bytes, content_type: str) -> None:
    assert status in (200, 400, 413), (status, body[:300])
    replies = orjson.loads(body)
    assert isinstance(replies, list), body[:300]
    assert replies, body[:300]
    assert all(isinstance(reply, dict) for reply in replies), body[:300]
    for reply in replies:
        if "successful" in reply:
            assert isinstance(reply["successful"], bool), reply
            if not reply["successful"]:
                assert isinstance(reply.get("error"), str), reply
                assert _ERROR.match(reply["error"]), reply
        else:
            assert isinstance(reply.get("channel"), str), reply  # an event
            assert "data" in reply, reply
    if status != 200:
        assert len(replies) == 1, replies
        assert replies[0]["successful"] is False, replies
        return
    messages = orjson.loads(sent) if content_type == "application/json" else None
    if messages is not None:
        count = len(messages) if isinstance(messages, list) else 1
        answered = [reply for reply in replies if "successful" in reply]
        assert len(answered) == count, (count, replies[:5])


def test_fuzzed_bayeux_requests_get_bayeux_answers_and_leave_no_session_stuck(
    bayeux_server: RunningServer,
) -> None:
    examples = 0

    @given(body=_BODIES, authorization=_AUTHORIZATION)
    @settings(
        max_examples=_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.data_too_large,
        ],
    )
    def fuzz(body: tuple[bytes, str], authorization: str) -> None:
        nonlocal examples
        examples += 1
        content, content_type = body
        headers = {"Content-Type": content_type}
        if authorization:
            headers["Authorization"] = authorization
        response = httpx.post(
            bayeux_server.base_url + bayeux_http.PATH, content=content, headers=headers, timeout=30
        )
        _check_replies(response.status_code, response.content, content, content_type)
        if response.status_code == 200 and content_type == "application/json":
            sent = orjson.loads(content)
            _replace_disconnected(bayeux_server.base_url, sent, orjson.loads(response.content))

    fuzz()
    assert examples >= _EXAMPLES
    _no_session_is_stuck(bayeux_server)


def _no_session_is_stuck(server: RunningServer) -> None:
    """Every held connect ends, the fuzzed sessions still answer a connect at once, and a new
    session gets what is published."""
    deadline = time.monotonic() + 10 * _HOLD_S + 5
    with httpx.Client(base_url=server.base_url, headers=_auth(_TOKENS[0])) as http:
        while (held := http.get("/readyz").json().get("heldConnects")) != 0:
            assert time.monotonic() < deadline, f"{held} connects still held"
            time.sleep(0.05)  # another process's state: there is nothing to await but it
        for client_id in _SESSIONS:
            reply = _post(http, [bayeux_http.connect(client_id, timeout_ms=0)])[-1]
            assert reply["successful"] or reply["error"] == "403::Unknown client", reply
        channel = f"/event/After{uuid.uuid4().hex[:8]}__e"
        client_id = _handshake(http)
        _meta(http, bayeux_http.connect(client_id))
        _meta(http, bayeux_http.subscribe(client_id, channel))
        published = http.post("/v1/events" + channel, json={"n": 1})
        assert published.status_code == 201, published.text
        replies = _meta(http, bayeux_http.connect(client_id))
        events = [reply for reply in replies if reply.get("channel") == channel]
        assert [e["data"]["event"]["replayId"] for e in events] == [published.json()["replayId"]]
