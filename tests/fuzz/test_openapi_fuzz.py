"""Schemathesis against `/openapi.json` of a real server process: every native and admin route
answers no 5xx, and every refusal is a JSON `{"error","message"}` with a status (and `error`
code) its operation lists.

Deterministic: a fixed seed, derandomized Hypothesis and no example database, so every run
sends the same requests. Half of the tenant, client and channel values come from what the
server really has, so the fuzzing reaches the paths past "not found".
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case

from api.openapi import document
from tests.e2e.server import CLIENT_ID, CLIENT_SECRET, RunningServer, run_server
from tests.fuzz.checks import CHECKS

OPERATOR_KEY = "fuzz-operator-key-0123456789"
TENANT, CLIENT = "fuzzed", "fuzzed-client"
#: One undefined channel (anything publishes) and one with a schema (violations are refused).
OPEN_CHANNEL, TYPED_CHANNEL = "Fuzz__e", "Typed__e"
_SEGMENT = re.compile(r"[A-Za-z0-9_.~-]+|\*\*?")
_TYPED_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"n": {"type": "integer"}, "tag": {"type": "string", "maxLength": 8}},
}
_EXAMPLES = 40
_STREAM_READ_S = 0.2  # an opened stream never ends by itself: read this long, then close it
_GRANTS = ["client_credentials", "password", "refresh_token"]

_CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 20_261_124,
        "dictionaries": {
            "tenants": {"values": [TENANT]},
            "clients": {"values": [CLIENT]},
            "channels": {"values": [OPEN_CHANNEL, TYPED_CHANNEL]},
            "grants": {"values": _GRANTS},
            "client_ids": {"values": [CLIENT_ID]},
            "client_secrets": {"values": [CLIENT_SECRET]},
        },
        "parameters": {
            "path.tenant": {"dictionary": "tenants", "probability": 0.5},
            "path.client": {"dictionary": "clients", "probability": 0.5},
            "path.channel": {"dictionary": "channels", "probability": 0.5},
            "body.grant_type": {"dictionary": "grants", "probability": 0.7},
            "body.client_id": {"dictionary": "client_ids", "probability": 0.7},
            "body.client_secret": {"dictionary": "client_secrets", "probability": 0.5},
        },
    }
)
schema = schemathesis.openapi.from_dict(document(), config=_CONFIG)
_TURNS = itertools.count()
#: Filled by the server fixture: the credential behind each placeholder.
_CREDENTIALS: dict[str, str] = {}


@schema.auth(refresh_interval=None)
class _Bearer:
    """A token of the bootstrap client (every scope, `admin` of its own tenant included), and on
    /v1/admin half the time the operator key instead; schemathesis also sends requests without
    a credential, and with a wrong one. Some cases are built before the server runs, so they
    carry a placeholder the test swaps for the credential."""

    def get(self, case: Case[Any], context: object) -> str:
        if not case.path.startswith("/v1/admin"):
            return "<token>"
        return ("<operator>", "<token>")[next(_TURNS) % 2]

    def set(self, case: Case[Any], data: str, context: object) -> None:
        case.headers["Authorization"] = f"Bearer {data}"


def _under_event(case: Case[Any]) -> None:
    """OpenAPI path parameters hold no `/`, but channels do: a generated channel that is one
    valid segment becomes a channel under `/event`, where events are published."""
    channel = (case.path_parameters or {}).get("channel")
    if isinstance(channel, str) and _SEGMENT.fullmatch(channel):
        case.path_parameters["channel"] = "event/" + channel


def _with_credentials(case: Case[Any]) -> None:
    authorization = str(case.headers.get("Authorization", ""))
    placeholder = authorization.removeprefix("Bearer ")
    if placeholder in _CREDENTIALS:
        case.headers["Authorization"] = f"Bearer {_CREDENTIALS[placeholder]}"


def _provision(http: httpx.Client) -> None:
    """The tenant and client the admin operations are pointed at (again after a fuzzed
    DELETE removed them), and the typed channel of the bootstrap tenant."""
    operator = {"Authorization": f"Bearer {OPERATOR_KEY}"}
    http.post("/v1/admin/tenants", json={"tenantId": TENANT}, headers=operator)
    http.post(
        f"/v1/admin/tenants/{TENANT}/clients",
        json={"clientId": CLIENT, "scopes": ["publish"]},
        headers=operator,
    )
    defined = http.put(
        f"/v1/admin/tenants/default/channels/event/{TYPED_CHANNEL}",
        json={"schema": _TYPED_SCHEMA, "force": True},
        headers=operator,
    )
    assert defined.status_code == 200, defined.text


@pytest.fixture(scope="module")
def fuzzed_server() -> Iterator[RunningServer]:
    env = {"REPLAYBUS_OPERATOR_KEY": OPERATOR_KEY, "REPLAYBUS_SSE_HEARTBEAT": "50ms"}
    with run_server(env) as server, httpx.Client(base_url=server.base_url) as http:
        _provision(http)
        _CREDENTIALS.update({"<operator>": OPERATOR_KEY, "<token>": server.token()})
        yield server
        _CREDENTIALS.clear()


def test_the_fuzzed_document_is_the_one_the_server_serves(fuzzed_server: RunningServer) -> None:
    served = httpx.get(fuzzed_server.base_url + "/openapi.json")
    assert orjson.loads(served.content) == orjson.loads(orjson.dumps(document()))


@schema.parametrize()
@settings(
    max_examples=_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_route_answers_fuzzed_requests_as_documented(
    case: Case[Any], fuzzed_server: RunningServer
) -> None:
    streaming = case.path.startswith("/v1/stream")
    _with_credentials(case)
    _under_event(case)
    case.call_and_validate(
        base_url=fuzzed_server.base_url,
        timeout=_STREAM_READ_S if streaming else 30,
        checks=CHECKS,
    )
    if case.method == "DELETE" and case.path == "/v1/admin/tenants/{tenant}":
        with httpx.Client(base_url=fuzzed_server.base_url) as http:
            _provision(http)
