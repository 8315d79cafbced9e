"""Log output: `JsonFormatter` writes one JSON object per record (with the record's `extra`
fields and any exception), `configure_logging` picks the format from the settings, and an
unknown `REPLAYBUS_LOG_FORMAT` is refused at start-up."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from api.logs import JsonFormatter, configure_logging
from app.settings import Settings, SettingsError


def _record(message: str, *args: object, **extra: Any) -> logging.LogRecord:
    logger = logging.getLogger("replaybus.test")
    return logger.makeRecord(
        "replaybus.test", logging.WARNING, __file__, 10, message, args, None, extra=extra
    )


def _line(text: str) -> dict[str, Any]:
    assert "\n" not in text, text
    decoded = orjson.loads(text)
    assert isinstance(decoded, dict), decoded
    return decoded


def test_a_record_is_one_json_object_with_time_level_logger_and_message() -> None:
    record = _record("published %d events to %s", 3, "/event/X__e")
    record.created = datetime(2026, 11, 22, 22, 33, 8, 213_894, tzinfo=UTC).timestamp()

    line = _line(JsonFormatter().format(record))

    assert line == {
        "time": "2026-11-22T22:33:08.213+00:00",
        "level": "warning",
        "logger": "replaybus.test",
        "message": "published 3 events to /event/X__e",
    }


def test_extra_fields_become_keys_with_their_json_values() -> None:
    class Opaque:
        def __str__(self) -> str:
            return "opaque-value"

    record = _record(
        "GET /v1/events",
        method="GET",
        status=201,
        duration_ms=1.5,
        tenant=None,
        route="/v1/events/{channel:path}",
        thing=Opaque(),
    )

    line = _line(JsonFormatter().format(record))

    assert line["method"] == "GET"
    assert line["status"] == 201
    assert line["duration_ms"] == 1.5
    assert line["tenant"] is None
    assert line["route"] == "/v1/events/{channel:path}"
    assert line["thing"] == "opaque-value"  # anything else is written as its text
    # Standard LogRecord attributes are not copied in.
    assert not {"args", "msg", "levelno", "pathname", "lineno", "exc_info"} & set(line)


def test_an_exception_is_included_with_its_traceback() -> None:
    try:
        raise RuntimeError("the engine fell over")
    except RuntimeError:
        exc_info = sys.exc_info()
    record = logging.getLogger("replaybus.test").makeRecord(
        "replaybus.test", logging.ERROR, __file__, 20, "request failed", (), exc_info
    )

    line = _line(JsonFormatter().format(record))

    assert line["level"] == "error"
    assert line["message"] == "request failed"
    assert "Traceback (most recent call last)" in line["exception"]
    assert "RuntimeError: the engine fell over" in line["exception"]


def test_a_message_with_newlines_stays_on_one_line() -> None:
    text = JsonFormatter().format(_record("first line\nsecond line"))

    assert _line(text)["message"] == "first line\nsecond line"


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, with its handlers and level restored after the test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield root
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def _emit_through_root(root: logging.Logger, **extra: Any) -> str:
    [handler] = root.handlers
    assert isinstance(handler, logging.StreamHandler)
    stream = io.StringIO()
    handler.setStream(stream)
    logging.getLogger("replaybus.access").warning("hello %s", "world", extra=extra)
    return stream.getvalue()


def test_configure_logging_with_json_format_writes_json_lines(
    root_logger: logging.Logger,
) -> None:
    configure_logging(Settings(log_format="json", log_level="warning"))

    assert root_logger.level == logging.WARNING
    [handler] = root_logger.handlers
    assert isinstance(handler.formatter, JsonFormatter)
    output = _emit_through_root(root_logger, status=200)
    line = _line(output.rstrip("\n"))
    assert line["message"] == "hello world"
    assert line["logger"] == "replaybus.access"
    assert line["status"] == 200


def test_configure_logging_with_text_format_writes_plain_lines(
    root_logger: logging.Logger,
) -> None:
    configure_logging(Settings(log_format="text", log_level="debug"))

    assert root_logger.level == logging.DEBUG
    [handler] = root_logger.handlers
    assert not isinstance(handler.formatter, JsonFormatter)
    output = _emit_through_root(root_logger, status=200)
    assert output.rstrip("\n").endswith(" WARNING replaybus.access: hello world")
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(output)


def test_configure_logging_maps_trace_to_debug(root_logger: logging.Logger) -> None:
    configure_logging(Settings(log_level="trace"))

    assert root_logger.level == logging.DEBUG


def test_configure_logging_replaces_earlier_handlers(root_logger: logging.Logger) -> None:
    configure_logging(Settings(log_format="text"))
    configure_logging(Settings(log_format="json"))

    [handler] = root_logger.handlers
    assert isinstance(handler.formatter, JsonFormatter)


def test_an_unknown_log_format_is_refused_naming_the_variable() -> None:
    with pytest.raises(SettingsError, match=r"^REPLAYBUS_LOG_FORMAT: ") as refused:
        Settings.from_env({"REPLAYBUS_LOG_FORMAT": "xml"})

    assert "'xml'" in str(refused.value)


def test_the_log_format_is_read_from_the_environment() -> None:
    assert Settings.from_env({"REPLAYBUS_LOG_FORMAT": "json"}).log_format == "json"
    assert Settings.from_env({}).log_format == "text"
