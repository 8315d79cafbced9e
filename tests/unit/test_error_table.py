"""Every domain error has its own row in the one HTTP error table."""

from __future__ import annotations

import re

import orjson
import pytest

from api.errors import HTTP_ERRORS, error_response
from app import errors
from app.errors import ReplaybusError


def _all_error_classes() -> list[type[ReplaybusError]]:
    found: list[type[ReplaybusError]] = []
    pending: list[type[ReplaybusError]] = [ReplaybusError]
    while pending:
        cls = pending.pop()
        if cls not in found:
            found.append(cls)
            pending.extend(cls.__subclasses__())
    return sorted(found, key=lambda cls: cls.__name__)


ERROR_CLASSES = _all_error_classes()


def test_the_walk_finds_every_exported_error() -> None:
    exported = {getattr(errors, name) for name in errors.__all__}

    assert exported <= set(ERROR_CLASSES)
    assert len(ERROR_CLASSES) >= 22


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_every_error_class_has_its_own_row(cls: type[ReplaybusError]) -> None:
    assert cls in HTTP_ERRORS


def test_table_has_no_rows_for_foreign_classes() -> None:
    assert set(HTTP_ERRORS) == set(ERROR_CLASSES)


@pytest.mark.parametrize(
    ("cls", "row"), HTTP_ERRORS.items(), ids=[cls.__name__ for cls in HTTP_ERRORS]
)
def test_every_status_is_a_client_or_server_error(
    cls: type[ReplaybusError], row: tuple[int, str]
) -> None:
    status, _ = row
    assert 400 <= status <= 599


def test_codes_are_unique_snake_case() -> None:
    codes = [code for _, code in HTTP_ERRORS.values()]

    assert len(codes) == len(set(codes))
    assert [code for code in codes if not re.fullmatch(r"[a-z]+(_[a-z0-9]+)*", code)] == []


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (errors.ReplaybusError("boom"), 500, "internal_error"),
        (errors.MalformedJson("msg"), 400, "malformed_json"),
        (errors.InvalidReplayId("msg"), 400, "invalid_replay_id"),
        (errors.InvalidChannel("msg"), 422, "invalid_channel"),
        (errors.UnknownChannel("msg"), 404, "unknown_channel"),
        (errors.ChannelNotPublishable("msg"), 403, "channel_not_publishable"),
        (errors.EventTooLarge("msg"), 413, "event_too_large"),
        (errors.BatchTooLarge("msg"), 413, "batch_too_large"),
        (errors.InsufficientScope("msg"), 403, "insufficient_scope"),
        (errors.TokenExpired("msg"), 401, "expired_token"),
        (errors.EngineUnavailable("msg"), 503, "engine_unavailable"),
        (errors.Draining("msg"), 503, "draining"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
def test_error_response_status_and_body(error: ReplaybusError, status: int, code: str) -> None:
    response = error_response(error)

    assert response.status_code == status
    assert response.media_type == "application/json"
    assert orjson.loads(response.body) == {"error": code, "message": error.message}


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_error_response_uses_the_table_row_and_the_message(cls: type[ReplaybusError]) -> None:
    status, code = HTTP_ERRORS[cls]

    response = error_response(cls('the message, with "quotes" and ü'))

    assert response.status_code == status
    assert orjson.loads(response.body) == {
        "error": code,
        "message": 'the message, with "quotes" and ü',
    }


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_challenge_and_retry_headers_follow_the_status(cls: type[ReplaybusError]) -> None:
    status, _ = HTTP_ERRORS[cls]

    response = error_response(cls("msg"))

    assert (response.headers.get("www-authenticate") is not None) is (status == 401)
    assert (response.headers.get("retry-after") is not None) is (status == 503)


def test_unauthenticated_response_challenges_for_a_bearer_token() -> None:
    response = error_response(errors.TokenMissing("an access token is required"))

    assert response.headers["www-authenticate"] == 'Bearer realm="replaybus"'


def test_unavailable_response_asks_to_retry() -> None:
    response = error_response(errors.ServiceUnavailable("busy"))

    assert response.headers["retry-after"] == "1"


def test_an_overloaded_node_answers_503_with_its_jittered_retry_after_rounded_up() -> None:
    response = error_response(errors.Overloaded("busy", retry_after=3.2))

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "4"
    assert orjson.loads(response.body)["error"] == "overloaded"


def test_an_unreplicated_publish_answers_503_naming_what_was_stored() -> None:
    response = error_response(errors.NotReplicated("stored, not replicated", [10, 11]))

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert orjson.loads(response.body) == {
        "error": "not_replicated",
        "message": "stored, not replicated",
        "replayIds": [10, 11],
    }


def test_a_recently_deleted_tenant_id_answers_409_with_when_to_retry() -> None:
    response = error_response(errors.TenantRecentlyDeleted("not yet", retry_after=7.5))

    assert response.status_code == 409
    assert response.headers["Retry-After"] == "8"
    assert orjson.loads(response.body)["error"] == "tenant_recently_deleted"
