"""Pure Bayeux wire codec: request bodies in, reply arrays and event messages out, and the exact
error strings Salesforce clients match on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs

import orjson

from app.envelope import format_created
from app.errors import MalformedBayeux
from app.model import Event

__all__ = [
    "AUTHENTICATION_INVALID",
    "AUTHENTICATION_REQUIRED",
    "CONCURRENT_LIMIT",
    "HANDSHAKE_DENIED",
    "UNKNOWN_CLIENT",
    "Message",
    "channel_does_not_exist",
    "decode_messages",
    "encode_event",
    "encode_replies",
    "replay_id_invalid",
]

Message = dict[str, Any]

AUTHENTICATION_REQUIRED = "401::Request requires authentication"
AUTHENTICATION_INVALID = "401::Authentication invalid"
HANDSHAKE_DENIED = "403::Handshake denied"
CONCURRENT_LIMIT = "403::Organization concurrent user limit exceeded"
UNKNOWN_CLIENT = "403::Unknown client"
SUBSCRIPTION_DENIED = "403::Subscription denied"
SUBSCRIBE_SCOPE_MISSING = "403::The access token lacks the subscribe scope"
TENANT_SUSPENDED = "403::Tenant suspended"
CHANNEL_NOT_SPECIFIED = "400::Channel name not specified"
LEADING_SLASH = "400::Channel subscriptions must start with a leading '/'"
TOO_MANY_SUBSCRIPTIONS = "403::Too many subscriptions for this client"
PUBLISH_DENIED = "403::Publishing over Bayeux is not supported, use the REST API"
UNKNOWN_META_CHANNEL = "400::Unknown meta channel"
CHANNEL_MISSING = "400::Message without a channel"
REQUEST_TOO_LARGE = "413::Maximum Request Size Exceeded"
REQUEST_TIMEOUT = "408::Request body not received in time"
ONE_PER_REQUEST = "400::Only one handshake and one connect per request"
UNAVAILABLE = "503::Service temporarily unavailable, retry"
BUSY = "503::This node is handling too many handshakes, retry"
MALFORMED = "400::Malformed request, expected a JSON array of Bayeux messages"


def replay_id_invalid(replay_id: object) -> str:
    """Salesforce's text, byte for byte (two spaces after "invalid."); the value as sent."""
    shown = replay_id if isinstance(replay_id, str) else orjson.dumps(replay_id).decode()
    return (
        f"400::The replayId {{{shown}}} you provided was invalid.  Please provide a valid ID, "
        "-2 to replay all events, or -1 to replay only new events."
    )


def channel_does_not_exist(channel: str) -> str:
    return f"400::The channel you requested to subscribe to does not exist {{{channel}}}"


def subscription_not_permitted(channel: str) -> str:
    return f"403::The access token's scopes do not allow subscribing to {{{channel}}}"


def invalid_connection_type(connection_type: object) -> str:
    return f"400::Invalid connection type {{{connection_type}}}"


def decode_messages(body: bytes, content_type: str) -> list[Message]:
    """Messages from a JSON body (array or single object) or a form body whose `message`
    field(s) hold one message or an array each."""
    if content_type.split(";", 1)[0].strip().lower() == "application/x-www-form-urlencoded":
        try:
            fields = parse_qs(body.decode(), keep_blank_values=True)
        except UnicodeDecodeError:
            raise MalformedBayeux("the form body is not UTF-8") from None
        values = fields.get("message")
        if not values:
            raise MalformedBayeux("the form has no 'message' field")
        messages: list[Message] = []
        for value in values:
            messages.extend(_decode_json(value.encode()))
        return messages
    return _decode_json(body)


def _decode_json(raw: bytes) -> list[Message]:
    try:
        decoded = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise MalformedBayeux(f"the body is not valid JSON: {error}") from None
    items = decoded if isinstance(decoded, list) else [decoded]
    if not items or not all(isinstance(item, dict) for item in items):
        raise MalformedBayeux("expected a Bayeux message object or a non-empty array of them")
    return items


def encode_replies(replies: Sequence[Message | bytes]) -> bytes:
    """The reply array; pre-encoded event messages (bytes) are spliced in unchanged."""
    return orjson.dumps([orjson.Fragment(r) if isinstance(r, bytes) else r for r in replies])


_SYSTEM_FIELDS = (b'"CreatedDate"', b'"CreatedById"')


def _payload_with_system_fields(event: Event) -> bytes:
    """The payload object with `CreatedDate` and `CreatedById` set, without re-encoding it
    unless it already has one of them (which the system values then replace)."""
    created = orjson.dumps(format_created(event.created_us))
    author = orjson.dumps(event.created_by)
    payload = event.payload
    if any(name in payload for name in _SYSTEM_FIELDS):
        fields = orjson.loads(payload)
        fields.pop("CreatedDate", None)
        fields.pop("CreatedById", None)
        payload = orjson.dumps(fields)
    system = b'"CreatedDate":' + created + b',"CreatedById":' + author
    body = payload.strip()[1:-1]  # the members of the object, however it was spaced
    if not body.strip():
        return b"{" + system + b"}"
    return b"{" + body + b"," + system + b"}"


def encode_event(event: Event, *, with_uuid: bool) -> bytes:
    """The Salesforce platform-event message: `{"channel", "data": {"schema", "payload",
    "event": {"replayId"[, "EventUuid"]}}}`; `EventUuid` from API version 52.0 on."""
    meta: dict[str, Any] = {"replayId": event.replay_id}
    if with_uuid:
        meta["EventUuid"] = event.uuid
    return orjson.dumps(
        {
            "channel": event.key.name,
            "data": {
                "schema": event.schema,
                "payload": orjson.Fragment(_payload_with_system_fields(event)),
                "event": meta,
            },
        }
    )
