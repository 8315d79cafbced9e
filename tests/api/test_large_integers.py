"""Integers beyond ±(2^53 - 1) never become something else on their way through: a payload
holding one is refused with a 400 naming it, and a position beyond the ReplayId range is
refused on every transport, instead of either silently turning into a float or a number that
JavaScript subscribers read differently."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api._support import Node, bearer, error_code, hold_stream

ALL = ["publish", "subscribe"]
CHANNEL = "/event/Big__e"
SAFE = 2**53 - 1
UNSAFE = [2**53, 2**53 + 1, -(2**53), 2**63, 2**64, 10**30, -(10**25)]


async def _tenant_token(node: Node) -> str:
    await node.create_tenant("acme")
    return await node.client_token("acme", ALL)


def _body(value: int) -> bytes:
    return b'{"orderId": "A-1", "amount": {"cents": ' + str(value).encode() + b"}}"


@pytest.mark.parametrize("value", UNSAFE)
async def test_a_payload_integer_beyond_2_53_is_refused_and_nothing_is_stored(
    node: Node, value: int
) -> None:
    token = await _tenant_token(node)
    headers = {**bearer(token), "Content-Type": "application/json"}

    native = await node.http.post("/v1/events" + CHANNEL, content=_body(value), headers=headers)
    salesforce = await node.http.post(
        "/services/data/v58.0/sobjects/Big__e", content=_body(value), headers=headers
    )

    assert native.status_code == 400, native.text
    assert error_code(native) == "invalid_body"
    assert str(value) in native.json()["message"]
    assert salesforce.status_code == 400, salesforce.text
    assert salesforce.json()[0]["errorCode"] == "INVALID_FIELD"
    assert await node.history_events(token, CHANNEL) == []


async def test_integers_within_2_53_and_long_digit_strings_are_kept_exactly(node: Node) -> None:
    token = await _tenant_token(node)
    payload: dict[str, Any] = {
        "top": SAFE,
        "bottom": -SAFE,
        "replayId": 1_795_386_788_213_894,
        "text": "12345678901234567890123 and \\" + str(2**64),
        str(2**64): [1.5, 1e300, 12345678901234567.5],
    }

    published = await node.publish(token, CHANNEL, payload)

    assert published.status_code == 201, published.text
    [event] = await node.history_events(token, CHANNEL)
    assert event["payload"] == payload


@pytest.mark.parametrize("position", [str(2**53), str(2**64), "1" + "0" * 30])
async def test_a_position_beyond_the_replay_id_range_is_refused(node: Node, position: str) -> None:
    token = await _tenant_token(node)

    history = await node.http.get(
        f"/v1/events{CHANNEL}", params={"after": position}, headers=bearer(token)
    )
    async with hold_stream(node, token, CHANNEL, headers={"Last-Event-ID": position}) as start:
        stream = (start.status, start.error)

    assert history.status_code == 400, history.text
    assert error_code(history) == "invalid_replay_id"
    assert stream == (400, "invalid_replay_id")


@pytest.mark.parametrize("position", [2**53, 2**53 + 1, 2**64, 10**30])
async def test_a_bayeux_replay_id_beyond_the_range_is_refused(node: Node, position: int) -> None:
    token = await _tenant_token(node)
    assert (await node.publish(token, CHANNEL)).status_code == 201
    client_id = await node.bayeux_session(token)
    message = (
        b'[{"channel": "/meta/subscribe", "clientId": "' + client_id.encode() + b'", '
        b'"subscription": "' + CHANNEL.encode() + b'", '
        b'"ext": {"replay": {"' + CHANNEL.encode() + b'": ' + str(position).encode() + b"}}}]"
    )

    response = await node.http.post(
        "/cometd/58.0",
        content=message,
        headers={**bearer(token), "Content-Type": "application/json"},
    )

    [reply] = response.json()
    assert reply["successful"] is False, reply
    assert reply["error"].startswith("400::The replayId"), reply
