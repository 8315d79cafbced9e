"""Salesforce-style REST publishing (checklist lines 38 and 39) against a real server."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.server import RunningServer
from tests.e2e.sse import channel_name


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _event_type() -> str:
    return channel_name().removeprefix("/event/")


async def _history(
    client: httpx.AsyncClient, server: RunningServer, token: str, kind: str
) -> list[dict[str, object]]:
    response = await client.get(f"{server.base_url}/v1/events/event/{kind}", headers=_auth(token))
    events: list[dict[str, object]] = response.json()["events"]
    return events


@pytest.mark.parametrize("suffix", ["", "/"])
async def test_line_38_sobject_publish_answers_201_and_the_event_is_stored(
    server: RunningServer, token: str, suffix: str
) -> None:
    kind = _event_type()
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{server.base_url}/services/data/v58.0/sobjects/{kind}{suffix}",
            json={"Printer_Model__c": "XZO-5"},
            headers=_auth(token),
        )
        events = await _history(client, server, token, kind)
    assert response.status_code == 201
    body = response.json()
    assert body["success"] is True
    assert body["errors"] == [
        {"statusCode": "OPERATION_ENQUEUED", "message": body["id"], "fields": []}
    ]
    assert [(e["uuid"], e["payload"]) for e in events] == [
        (body["id"], {"Printer_Model__c": "XZO-5"})
    ]


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "code"),
    [
        ("/services/data/v58.0/sobjects/Account", {"a": 1}, True, 404, "NOT_FOUND"),
        ("/services/data/latest/sobjects/X__e", {"a": 1}, True, 404, "NOT_FOUND"),
        ("/services/data/v58.0/sobjects/X__e", [1], True, 400, "INVALID_FIELD"),
        ("/services/data/v58.0/sobjects/X__e", {"a": 1}, False, 401, "INVALID_SESSION_ID"),
    ],
    ids=["not an event type", "bad version", "not an object", "no token"],
)
async def test_sobject_errors_are_salesforce_error_arrays(
    server: RunningServer,
    token: str,
    path: str,
    body: object,
    headers: bool,
    status: int,
    code: str,
) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            server.base_url + path, json=body, headers=_auth(token) if headers else {}
        )
    assert response.status_code == status
    [error] = response.json()
    assert error["errorCode"] == code
    assert error["message"]


async def test_malformed_json_is_a_json_parser_error(server: RunningServer, token: str) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{server.base_url}/services/data/v58.0/sobjects/X__e",
            content=b'{"a":',
            headers={**_auth(token), "Content-Type": "application/json"},
        )
    assert response.status_code == 400
    assert response.json()[0]["errorCode"] == "JSON_PARSER_ERROR"


async def test_line_39_collection_answers_one_save_result_per_record_in_order(
    server: RunningServer, token: str
) -> None:
    first, second = _event_type(), _event_type()
    records = [
        {"attributes": {"type": first}, "n": 1},
        {"attributes": {"type": second}, "n": 2},
        {"attributes": {"type": "Account"}, "n": 3},
        {"attributes": {"type": first}, "n": 4},
    ]
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{server.base_url}/services/data/v58.0/composite/sobjects",
            json={"allOrNone": False, "records": records},
            headers=_auth(token),
        )
        stored_first = await _history(client, server, token, first)
        stored_second = await _history(client, server, token, second)
    assert response.status_code == 200
    results = response.json()
    assert [r["success"] for r in results] == [True, True, False, True]
    assert results[2]["errors"][0]["statusCode"] == "INVALID_TYPE"
    assert [e["uuid"] for e in stored_first] == [results[0]["id"], results[3]["id"]]
    assert [e["payload"] for e in stored_first] == [{"n": 1}, {"n": 4}]
    assert [e["uuid"] for e in stored_second] == [results[1]["id"]]


async def test_line_39_all_or_none_publishes_nothing_when_one_record_is_invalid(
    server: RunningServer, token: str
) -> None:
    kind = _event_type()
    records = [{"attributes": {"type": kind}, "n": 1}, {"n": 2}]
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{server.base_url}/services/data/v58.0/composite/sobjects",
            json={"allOrNone": True, "records": records},
            headers=_auth(token),
        )
        stored = await _history(client, server, token, kind)
    results = response.json()
    assert [r["success"] for r in results] == [False, False]
    assert results[0]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert results[1]["errors"][0]["statusCode"] == "INVALID_TYPE"
    assert stored == []


async def test_line_39_collection_over_200_records_is_refused(
    server: RunningServer, token: str
) -> None:
    records = [{"attributes": {"type": "X__e"}, "n": n} for n in range(201)]
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{server.base_url}/services/data/v58.0/composite/sobjects",
            json={"records": records},
            headers=_auth(token),
        )
    assert response.status_code == 400
    assert response.json()[0]["errorCode"] == "EXCEEDED_MAX_SIZE_REQUEST"


async def test_line_39_all_or_none_stores_nothing_when_a_record_of_another_type_is_too_large(
    server: RunningServer, token: str
) -> None:
    small, large = _event_type(), _event_type()
    records = [
        {"attributes": {"type": small}, "n": 1},
        {"attributes": {"type": large}, "blob": "x" * (1024 * 1024 + 10)},
    ]
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{server.base_url}/services/data/v58.0/composite/sobjects",
            json={"allOrNone": True, "records": records},
            headers={**_auth(token), "Idempotency-Key": f"all-or-none-{small}"},
        )
        stored = await _history(client, server, token, small)
    results = response.json()
    assert response.status_code == 200
    assert [r["success"] for r in results] == [False, False]
    assert results[1]["errors"][0]["statusCode"] == "STRING_TOO_LONG"
    assert stored == []
