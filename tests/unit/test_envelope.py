"""The native envelope, byte for byte, and query-string redaction for the access log."""

from __future__ import annotations

import pytest

from api.access_log import redact_query
from app.envelope import encode_envelope, format_created
from app.model import ChannelKey, Event


@pytest.mark.parametrize(
    ("created_us", "expected"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (1, "1970-01-01T00:00:00.000Z"),
        (999, "1970-01-01T00:00:00.000Z"),
        (1_000, "1970-01-01T00:00:00.001Z"),
        (999_999, "1970-01-01T00:00:00.999Z"),
        (1_000_000, "1970-01-01T00:00:01.000Z"),
        (1_700_000_000_000_000, "2023-11-14T22:13:20.000Z"),
        (1_700_000_000_123_456, "2023-11-14T22:13:20.123Z"),
        (1_700_000_000_999_999, "2023-11-14T22:13:20.999Z"),
        (1_709_251_199_999_500, "2024-02-29T23:59:59.999Z"),
        (4_102_444_799_999_999, "2099-12-31T23:59:59.999Z"),
        (2**53 - 1, "2255-06-05T23:47:34.740Z"),
    ],
)
def test_format_created_is_utc_milliseconds_truncated(created_us: int, expected: str) -> None:
    assert format_created(created_us) == expected


def _event(payload: bytes, schema: str | None = None) -> Event:
    return Event(
        key=ChannelKey("acme", "/event/Order_Placed__e"),
        replay_id=1_700_000_000_123_457,
        uuid="3f2c1b0a-1111-4222-8333-444455556666",
        created_us=1_700_000_000_123_456,
        payload=payload,
        created_by="client-1",
        schema=schema,
    )


@pytest.mark.parametrize(
    ("payload", "schema", "expected"),
    [
        pytest.param(
            b'{"orderId":"A-1","total":12.5}',
            None,
            b'{"channel":"/event/Order_Placed__e","replayId":1700000000123457,'
            b'"uuid":"3f2c1b0a-1111-4222-8333-444455556666",'
            b'"createdDate":"2023-11-14T22:13:20.123Z","schema":null,'
            b'"payload":{"orderId":"A-1","total":12.5}}',
            id="schema-null",
        ),
        pytest.param(
            b'{"b": 2,  "a":1}',
            None,
            b'{"channel":"/event/Order_Placed__e","replayId":1700000000123457,'
            b'"uuid":"3f2c1b0a-1111-4222-8333-444455556666",'
            b'"createdDate":"2023-11-14T22:13:20.123Z","schema":null,'
            b'"payload":{"b": 2,  "a":1}}',
            id="payload-bytes-spliced-verbatim",
        ),
        pytest.param(
            b"{}",
            "v-2",
            b'{"channel":"/event/Order_Placed__e","replayId":1700000000123457,'
            b'"uuid":"3f2c1b0a-1111-4222-8333-444455556666",'
            b'"createdDate":"2023-11-14T22:13:20.123Z","schema":"v-2","payload":{}}',
            id="with-schema",
        ),
    ],
)
def test_encode_envelope_is_byte_exact(payload: bytes, schema: str | None, expected: bytes) -> None:
    assert encode_envelope(_event(payload, schema)) == expected


def test_envelope_never_names_the_tenant() -> None:
    assert b"acme" not in encode_envelope(_event(b"{}"))


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("access_token=abc", "access_token=[redacted]"),
        ("access_token=", "access_token=[redacted]"),
        ("replayId=-2&access_token=abc", "replayId=-2&access_token=[redacted]"),
        ("access_token=abc&replayId=-2", "access_token=[redacted]&replayId=-2"),
        ("a=1&access_token=abc.def-ghi&b=2", "a=1&access_token=[redacted]&b=2"),
        ("access_token=a&access_token=b", "access_token=[redacted]&access_token=[redacted]"),
        ("my_access_token=x", "my_access_token=x"),
        ("a=1&my_access_token=x", "a=1&my_access_token=x"),
        ("access_tokens=x", "access_tokens=x"),
        ("replayId=-1&limit=10", "replayId=-1&limit=10"),
        ("", ""),
    ],
)
def test_redact_query(query: str, expected: str) -> None:
    assert redact_query(query) == expected


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("access%5Ftoken=SECRETTOKEN", id="percent-encoded-underscore"),
        pytest.param("%61ccess_token=SECRETTOKEN", id="percent-encoded-letter"),
        pytest.param("a=1&access%5ftoken=SECRETTOKEN", id="lower-case-escape-after-another"),
    ],
)
def test_percent_encoded_token_parameter_is_redacted_too(query: str) -> None:
    # The server decodes parameter names before looking up `access_token`, so these spellings
    # authenticate a request; the token they carry must not reach the log either.
    assert "SECRETTOKEN" not in redact_query(query)


@pytest.mark.parametrize(
    "query",
    [
        "grant_type=client_credentials&client_id=c&client_secret=SECRETVALUE",
        "password=SECRETVALUE&username=u",
        "assertion=SECRETVALUE",
        "client%5Fsecret=SECRETVALUE",
    ],
)
def test_credentials_in_a_query_string_are_redacted(query: str) -> None:
    redacted = redact_query(query)
    assert "SECRETVALUE" not in redacted
    assert "[redacted]" in redacted
