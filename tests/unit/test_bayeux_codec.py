"""The Bayeux wire codec, byte for byte: request bodies in, reply arrays and Salesforce-shaped
event messages out, the exact error strings clients match on, client ids and API versions."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import orjson
import pytest

from app.bayeux import codec
from app.bayeux.codec import (
    Message,
    channel_does_not_exist,
    decode_messages,
    encode_event,
    encode_replies,
    invalid_connection_type,
    replay_id_invalid,
)
from app.bayeux.server import api_version, new_client_id
from app.errors import MalformedBayeux
from app.model import ChannelKey, Event

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"

HANDSHAKE = {"channel": "/meta/handshake", "version": "1.0", "id": "1"}
CONNECT = {"channel": "/meta/connect", "clientId": "abc", "connectionType": "long-polling"}

# --- decode_messages: what clients send --------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        pytest.param(
            b'[{"channel":"/meta/handshake","version":"1.0","id":"1"}]',
            JSON,
            [HANDSHAKE],
            id="json-array-of-one",
        ),
        pytest.param(
            b'{"channel":"/meta/handshake","version":"1.0","id":"1"}',
            JSON,
            [HANDSHAKE],
            id="json-single-object",
        ),
        pytest.param(
            b'[{"channel":"/meta/handshake","version":"1.0","id":"1"}]',
            "application/json;charset=UTF-8",
            [HANDSHAKE],
            id="json-with-charset",
        ),
        pytest.param(
            b'[{"channel":"/meta/handshake","version":"1.0","id":"1"}]',
            "Application/JSON; charset=utf-8",
            [HANDSHAKE],
            id="json-media-type-any-case",
        ),
        pytest.param(
            b'[{"channel":"/meta/handshake","version":"1.0","id":"1"}]',
            "",
            [HANDSHAKE],
            id="no-content-type-is-json",
        ),
        pytest.param(
            b'[{"channel":"/meta/connect","clientId":"abc","connectionType":"long-polling"},'
            b'{"channel":"/meta/subscribe","clientId":"abc","subscription":"/event/X__e","id":7}]',
            JSON,
            [
                CONNECT,
                {
                    "channel": "/meta/subscribe",
                    "clientId": "abc",
                    "subscription": "/event/X__e",
                    "id": 7,
                },
            ],
            id="json-batch-keeps-order-and-id-types",
        ),
        pytest.param(
            b"message=%7B%22channel%22%3A%22%2Fmeta%2Fhandshake%22%2C%22version%22%3A%221.0%22"
            b"%2C%22id%22%3A%221%22%7D",
            FORM,
            [HANDSHAKE],
            id="form-message-one-object",
        ),
        pytest.param(
            b"message=%5B%7B%22channel%22%3A%22%2Fmeta%2Fhandshake%22%2C%22version%22%3A%221.0%22"
            b"%2C%22id%22%3A%221%22%7D%5D",
            FORM + "; charset=UTF-8",
            [HANDSHAKE],
            id="form-message-array-with-charset",
        ),
        pytest.param(
            b"message=%5B%7B%22a%22%3A1%7D%2C%7B%22b%22%3A2%7D%5D&message=%7B%22c%22%3A3%7D",
            FORM,
            [{"a": 1}, {"b": 2}, {"c": 3}],
            id="form-two-message-fields-in-order",
        ),
        pytest.param(
            b"other=x&message=%7B%22a%22%3A%22x+y%22%7D",
            FORM,
            [{"a": "x y"}],
            id="form-other-fields-ignored-plus-is-space",
        ),
    ],
)
def test_decode_messages(body: bytes, content_type: str, expected: list[Message]) -> None:
    assert decode_messages(body, content_type) == expected


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        pytest.param(b"[{", JSON, "not valid JSON", id="invalid-json"),
        pytest.param(b"", JSON, "not valid JSON", id="empty-body"),
        pytest.param(b"\xff\xfe[]", JSON, "not valid JSON", id="json-not-utf-8"),
        pytest.param(b"[]", JSON, "non-empty array", id="empty-array"),
        pytest.param(b"[1,2]", JSON, "non-empty array", id="array-of-numbers"),
        pytest.param(b'[{"channel":"/meta/connect"},"x"]', JSON, "non-empty array", id="mixed"),
        pytest.param(b'[["nested"]]', JSON, "non-empty array", id="array-of-arrays"),
        pytest.param(b'"text"', JSON, "non-empty array", id="json-string"),
        pytest.param(b"null", JSON, "non-empty array", id="json-null"),
        pytest.param(b"other=1", FORM, "no 'message' field", id="form-without-message"),
        pytest.param(b"", FORM, "no 'message' field", id="empty-form"),
        pytest.param(b"message=", FORM, "not valid JSON", id="form-empty-message"),
        pytest.param(b"message=%7B", FORM, "not valid JSON", id="form-invalid-json"),
        pytest.param(b"message=%5B%5D", FORM, "non-empty array", id="form-empty-array"),
        pytest.param(b"message=\xff\xfe", FORM, "not UTF-8", id="form-not-utf-8"),
        pytest.param(
            b"message=%7B%22a%22%3A1%7D&message=%5B%5D",
            FORM,
            "non-empty array",
            id="form-second-field-empty-array",
        ),
    ],
)
def test_decode_messages_refuses_malformed_bodies(
    body: bytes, content_type: str, reason: str
) -> None:
    with pytest.raises(MalformedBayeux) as raised:
        decode_messages(body, content_type)

    assert reason in raised.value.message


# --- encode_replies -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("replies", "expected"),
    [
        pytest.param([], b"[]", id="empty"),
        pytest.param(
            [{"channel": "/meta/connect", "clientId": "abc", "id": "2", "successful": True}],
            b'[{"channel":"/meta/connect","clientId":"abc","id":"2","successful":true}]',
            id="one-reply",
        ),
        pytest.param(
            [
                b'{"channel":"/event/A__e","data":{"n":1}}',
                b'{"channel":"/event/B__e","data":{"n":2}}',
                {"channel": "/meta/connect", "id": 3, "successful": True, "advice": {"x": None}},
            ],
            b'[{"channel":"/event/A__e","data":{"n":1}},{"channel":"/event/B__e","data":{"n":2}},'
            b'{"channel":"/meta/connect","id":3,"successful":true,"advice":{"x":null}}]',
            id="events-spliced-before-reply",
        ),
        pytest.param(
            [
                {"channel": "/meta/subscribe", "successful": False, "error": "400::x"},
                b'{"channel":"/event/A__e","data":{}}',
                {"channel": "/meta/connect", "successful": True},
            ],
            b'[{"channel":"/meta/subscribe","successful":false,"error":"400::x"},'
            b'{"channel":"/event/A__e","data":{}},{"channel":"/meta/connect","successful":true}]',
            id="mixed-order-kept",
        ),
        pytest.param(
            [b'{"b": 2,  "a":1}'],
            b'[{"b": 2,  "a":1}]',
            id="fragment-bytes-unchanged",
        ),
        pytest.param(
            [{"channel": "/meta/handshake", "ext": {"payload.format": True, "note": "é/\u2028"}}],
            b'[{"channel":"/meta/handshake","ext":{"payload.format":true,'
            b'"note":"\xc3\xa9/\xe2\x80\xa8"}}]',
            id="utf-8-not-escaped",
        ),
    ],
)
def test_encode_replies(replies: list[Message | bytes], expected: bytes) -> None:
    assert encode_replies(replies) == expected


# --- encode_event -------------------------------------------------------------------------

UUID = "3f2c1b0a-1111-4222-8333-444455556666"
EVENT = Event(
    key=ChannelKey("acme", "/event/Order_Placed__e"),
    replay_id=1_700_000_000_123_457,
    uuid=UUID,
    created_us=1_700_000_000_123_456,
    payload=b'{"orderId":"A-1","total":12.5}',
    created_by="client-1",
)
SYSTEM = b'"CreatedDate":"2023-11-14T22:13:20.123Z","CreatedById":"client-1"'


def _message(payload: bytes, event: bytes, schema: bytes = b"null") -> bytes:
    return (
        b'{"channel":"/event/Order_Placed__e","data":{"schema":'
        + schema
        + b',"payload":'
        + payload
        + b',"event":'
        + event
        + b"}}"
    )


WITH_UUID = b'{"replayId":1700000000123457,"EventUuid":"' + UUID.encode() + b'"}'
WITHOUT_UUID = b'{"replayId":1700000000123457}'


@pytest.mark.parametrize(
    ("payload", "schema", "with_uuid", "expected"),
    [
        pytest.param(
            EVENT.payload,
            None,
            True,
            _message(b'{"orderId":"A-1","total":12.5,' + SYSTEM + b"}", WITH_UUID),
            id="payload-with-uuid",
        ),
        pytest.param(
            EVENT.payload,
            None,
            False,
            _message(b'{"orderId":"A-1","total":12.5,' + SYSTEM + b"}", WITHOUT_UUID),
            id="payload-without-uuid",
        ),
        pytest.param(
            b"{}", None, True, _message(b"{" + SYSTEM + b"}", WITH_UUID), id="empty-with-uuid"
        ),
        pytest.param(
            b"{}", None, False, _message(b"{" + SYSTEM + b"}", WITHOUT_UUID), id="empty-no-uuid"
        ),
        pytest.param(
            b'{"a":1}',
            "dffQ2QLzDNHqwB8_sHMxdA",
            False,
            _message(b'{"a":1,' + SYSTEM + b"}", WITHOUT_UUID, b'"dffQ2QLzDNHqwB8_sHMxdA"'),
            id="schema-id",
        ),
        pytest.param(
            b'{"CreatedDate":"1999-01-01T00:00:00.000Z","a":1,"CreatedById":"forged"}',
            None,
            False,
            _message(b'{"a":1,' + SYSTEM + b"}", WITHOUT_UUID),
            id="system-fields-replace-client-values",
        ),
        pytest.param(
            b'{"CreatedDate":"1999-01-01T00:00:00.000Z"}',
            None,
            True,
            _message(b"{" + SYSTEM + b"}", WITH_UUID),
            id="only-created-date-replaced",
        ),
        pytest.param(
            b'{"CreatedById":null,"nested":{"CreatedDate":1}}',
            None,
            False,
            _message(b'{"nested":{"CreatedDate":1},' + SYSTEM + b"}", WITHOUT_UUID),
            id="nested-created-date-kept",
        ),
        pytest.param(
            b'{"b": 2,  "a":1}',
            None,
            False,
            _message(b'{"b": 2,  "a":1,' + SYSTEM + b"}", WITHOUT_UUID),
            id="stored-bytes-spliced-as-they-are",
        ),
    ],
)
def test_encode_event(payload: bytes, schema: str | None, with_uuid: bool, expected: bytes) -> None:
    event = replace(EVENT, payload=payload, schema=schema)

    assert encode_event(event, with_uuid=with_uuid) == expected


def _pairs(encoded: bytes) -> list[tuple[str, object]]:
    """The payload object's (key, value) pairs as written, duplicates included."""

    def keep_pairs(pairs: list[tuple[str, object]]) -> object:
        return pairs

    message = json.loads(encoded, object_pairs_hook=keep_pairs)
    data = dict(message)["data"]
    payload: list[tuple[str, object]] = dict(data)["payload"]
    return payload


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        pytest.param(
            b'{"CreatedDate":"x","a":1,"CreatedById":"y"}',
            [("a", 1)],
            id="both-replaced",
        ),
        pytest.param(
            b'{"note":"CreatedDate","CreatedById":"y"}',
            [("note", "CreatedDate")],
            id="name-as-a-value",
        ),
        pytest.param(
            b'{"a":{"CreatedById":"x"},"CreatedById":"y"}',
            [("a", [("CreatedById", "x")])],
            id="nested-kept-top-replaced",
        ),
    ],
)
def test_encode_event_payload_has_each_system_key_once(
    payload: bytes, expected: list[tuple[str, object]]
) -> None:
    encoded = encode_event(replace(EVENT, payload=payload), with_uuid=False)

    assert _pairs(encoded) == [
        *expected,
        ("CreatedDate", "2023-11-14T22:13:20.123Z"),
        ("CreatedById", "client-1"),
    ]


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"{ }", id="empty-object-with-space"),
        pytest.param(b'{"a":1}\n', id="trailing-newline"),
        pytest.param(b' {"a": 1} ', id="surrounding-spaces"),
    ],
)
def test_encode_event_is_valid_json_for_any_stored_object_encoding(payload: bytes) -> None:
    """The engine stores payload bytes as given and the envelope codec splices any valid JSON
    object encoding; the Bayeux encoding must stay valid JSON for them too."""
    decoded = orjson.loads(encode_event(replace(EVENT, payload=payload), with_uuid=False))

    expected = {**orjson.loads(payload)}
    expected.update(CreatedDate="2023-11-14T22:13:20.123Z", CreatedById="client-1")
    assert decoded["data"]["payload"] == expected


def test_encode_event_has_no_successful_field() -> None:
    decoded = orjson.loads(encode_event(EVENT, with_uuid=True))

    assert set(decoded) == {"channel", "data"}
    assert set(decoded["data"]) == {"schema", "payload", "event"}


# --- error strings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("actual", "expected"),
    [
        pytest.param(
            replay_id_invalid(5),
            "400::The replayId {5} you provided was invalid.  Please provide a valid ID, "
            "-2 to replay all events, or -1 to replay only new events.",
            id="replay-id-invalid-5",
        ),
        pytest.param(
            replay_id_invalid(1_700_000_000_123_457),
            "400::The replayId {1700000000123457} you provided was invalid.  Please provide a "
            "valid ID, -2 to replay all events, or -1 to replay only new events.",
            id="replay-id-invalid-large",
        ),
        pytest.param(
            replay_id_invalid(-3),
            "400::The replayId {-3} you provided was invalid.  Please provide a valid ID, "
            "-2 to replay all events, or -1 to replay only new events.",
            id="replay-id-invalid-negative",
        ),
        pytest.param(
            replay_id_invalid("abc"),
            "400::The replayId {abc} you provided was invalid.  Please provide a valid ID, "
            "-2 to replay all events, or -1 to replay only new events.",
            id="replay-id-invalid-text",
        ),
        pytest.param(
            channel_does_not_exist("/topic/X"),
            "400::The channel you requested to subscribe to does not exist {/topic/X}",
            id="channel-does-not-exist",
        ),
        pytest.param(
            channel_does_not_exist("/topic/AccountUpdates"),
            "400::The channel you requested to subscribe to does not exist {/topic/AccountUpdates}",
            id="channel-does-not-exist-salesforce-sample",
        ),
        pytest.param(
            invalid_connection_type("websocket"),
            "400::Invalid connection type {websocket}",
            id="invalid-connection-type",
        ),
        pytest.param(
            codec.AUTHENTICATION_REQUIRED, "401::Request requires authentication", id="auth-req"
        ),
        pytest.param(codec.AUTHENTICATION_INVALID, "401::Authentication invalid", id="auth-bad"),
        pytest.param(codec.HANDSHAKE_DENIED, "403::Handshake denied", id="handshake-denied"),
        pytest.param(
            codec.CONCURRENT_LIMIT,
            "403::Organization concurrent user limit exceeded",
            id="concurrent-limit",
        ),
        pytest.param(codec.UNKNOWN_CLIENT, "403::Unknown client", id="unknown-client"),
        pytest.param(codec.SUBSCRIPTION_DENIED, "403::Subscription denied", id="sub-denied"),
        pytest.param(
            codec.CHANNEL_NOT_SPECIFIED, "400::Channel name not specified", id="no-channel-name"
        ),
        pytest.param(
            codec.LEADING_SLASH,
            "400::Channel subscriptions must start with a leading '/'",
            id="leading-slash",
        ),
        pytest.param(
            codec.REQUEST_TOO_LARGE, "413::Maximum Request Size Exceeded", id="request-too-large"
        ),
    ],
)
def test_error_strings_byte_for_byte(actual: str, expected: str) -> None:
    assert actual.encode() == expected.encode()


def test_replay_id_invalid_has_two_spaces_after_invalid() -> None:
    assert "invalid.  Please" in replay_id_invalid(5)
    assert "invalid.   " not in replay_id_invalid(5)


ALL_ERROR_STRINGS = [
    codec.AUTHENTICATION_REQUIRED,
    codec.AUTHENTICATION_INVALID,
    codec.HANDSHAKE_DENIED,
    codec.CONCURRENT_LIMIT,
    codec.UNKNOWN_CLIENT,
    codec.SUBSCRIPTION_DENIED,
    codec.CHANNEL_NOT_SPECIFIED,
    codec.LEADING_SLASH,
    codec.TOO_MANY_SUBSCRIPTIONS,
    codec.PUBLISH_DENIED,
    codec.UNKNOWN_META_CHANNEL,
    codec.CHANNEL_MISSING,
    codec.REQUEST_TOO_LARGE,
    codec.MALFORMED,
    replay_id_invalid(5),
    channel_does_not_exist("/topic/X"),
    invalid_connection_type("websocket"),
]


@pytest.mark.parametrize("error", ALL_ERROR_STRINGS)
def test_every_error_is_code_colon_colon_message_without_further_colons(error: str) -> None:
    """`code::message`; clients (aiocometd) take the message after the last ':'."""
    assert re.fullmatch(r"[1-5][0-9]{2}::[^:]+", error), error


# --- client ids ---------------------------------------------------------------------------


def test_client_id_is_27_lowercase_base36_characters() -> None:
    for _ in range(200):
        assert re.fullmatch(r"[0-9a-z]{27}", new_client_id())


def test_client_ids_are_unique_and_use_the_whole_alphabet() -> None:
    ids = [new_client_id() for _ in range(20_000)]

    assert len(set(ids)) == len(ids)
    assert set("".join(ids)) == set("0123456789abcdefghijklmnopqrstuvwxyz")


# --- API versions -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("58.0", (58, 0)),
        ("45.0", (45, 0)),
        ("52.0", (52, 0)),
        ("51.9", (51, 9)),
        ("36.0", (36, 0)),
        ("52", (52, 0)),
        ("52.", (52, 0)),
        ("58.10", (58, 10)),
        (None, None),
        ("", None),
        ("v58.0", None),
        ("58.0.1", None),
        ("58,0", None),
        ("-52.0", None),
        (" 58.0", None),
        ("replay", None),
        ("²", None),
        ("52.²", None),
    ],
)
def test_api_version(text: str | None, expected: tuple[int, int] | None) -> None:
    assert api_version(text) == expected
