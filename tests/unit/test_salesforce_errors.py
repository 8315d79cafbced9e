"""The Salesforce REST boundary's error table covers every domain error."""

from __future__ import annotations

import orjson
import pytest

from api.salesforce import SALESFORCE_ERRORS, salesforce_error_response
from app import errors


def _all_errors() -> list[type[errors.ReplaybusError]]:
    found: list[type[errors.ReplaybusError]] = [errors.ReplaybusError]
    for cls in found:
        found.extend(cls.__subclasses__())
    return found


@pytest.mark.parametrize("error_class", _all_errors(), ids=lambda c: c.__name__)
def test_every_error_class_has_a_salesforce_row(error_class: type[errors.ReplaybusError]) -> None:
    assert error_class in SALESFORCE_ERRORS
    status, code = SALESFORCE_ERRORS[error_class]
    assert 400 <= status <= 599
    assert code.isupper()


def test_authentication_failures_say_what_jsforce_recognises() -> None:
    response = salesforce_error_response(errors.TokenExpired("the access token has expired"))
    assert response.status_code == 401
    assert orjson.loads(response.body) == [
        {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID", "fields": []}
    ]
