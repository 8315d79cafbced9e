"""The checks every fuzzed response must pass."""

from __future__ import annotations

from typing import Any

import orjson
import schemathesis
from schemathesis import Case
from schemathesis.checks import CheckContext, CheckFunction, not_a_server_error
from schemathesis.core.transport import Response
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

__all__ = ["CHECKS"]


@schemathesis.check
def json_error_body(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """Every refusal is JSON naming the error: `{"error","message"}` on the native API,
    RFC 6749's `{"error","error_description"}` from the token endpoint itself (its router's
    405 is the native kind)."""
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith("application/json"), f"{response.status_code}: {content_type}"
    body = orjson.loads(response.content)
    oauth = case.path == "/v1/oauth/token" and response.status_code != 405
    text = "error_description" if oauth else "message"
    assert isinstance(body, dict), body
    for field in ("error", text):
        assert isinstance(body.get(field), str), body
        assert body[field], body
    return None


CHECKS: list[CheckFunction] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    ignored_auth,
    unsupported_method,
    json_error_body,
]
