"""JSON log lines: valid JSON, the fields, trace ids while a span is active, never a payload."""

from __future__ import annotations

import asyncio
import io
import logging
import sys
from typing import Any

import orjson
import pytest

from shared import logs, tracing
from shared.errors import ConfigError
from tests.tracing_support import Traces, traces

__all__ = ["traces"]  # the fixture, imported for the tests below


def _record(message: str = "hello %s", *args: object, **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("prism.test", logging.WARNING, __file__, 1, message, args, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def _line(record: logging.LogRecord) -> dict[str, Any]:
    text = logs.JsonFormatter().format(record)
    assert "\n" not in text  # one object per line
    parsed = orjson.loads(text)
    assert isinstance(parsed, dict)
    return parsed


def test_a_line_is_json_with_time_level_logger_and_message() -> None:
    line = _line(_record("hello %s", "world"))
    assert line["level"] == "warning"
    assert line["logger"] == "prism.test"
    assert line["message"] == "hello world"
    assert line["time"].endswith("Z")
    assert len(line["time"]) == len("2026-01-01T00:00:00.000Z")
    assert "trace_id" not in line
    assert "conn" not in line


def test_extra_fields_other_than_the_known_ones_are_never_written() -> None:
    line = _line(_record("got a message", payload=b"secret", data="secret", conn="n1.abc", user="alice"))
    assert line["conn"] == "n1.abc"
    assert line["user"] == "alice"
    assert "secret" not in orjson.dumps(line).decode()
    assert set(line) == {"time", "level", "logger", "message", "conn", "user"}


async def test_bound_connection_ids_reach_records_of_that_task_only() -> None:
    async def connection_task() -> dict[str, Any]:
        logs.bind("node1", "node1.xyz", "bob")
        return _line(_record("closing"))

    inside = await asyncio.ensure_future(connection_task())
    assert (inside["node"], inside["conn"], inside["user"]) == ("node1", "node1.xyz", "bob")
    outside = _line(_record("elsewhere"))
    assert "conn" not in outside


def test_an_exception_is_written_as_one_field() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("prism.test", logging.ERROR, __file__, 1, "failed", (), None)
        record.exc_info = sys.exc_info()
    line = _line(record)
    assert "ValueError: boom" in line["exc"]


def test_the_active_span_s_ids_are_included(traces: Traces) -> None:
    assert tracing.tracer is not None
    with tracing.tracer.start_as_current_span("work") as span:
        line = _line(_record("inside"))
    context = span.get_span_context()
    assert line["trace_id"] == format(context.trace_id, "032x")
    assert line["span_id"] == format(context.span_id, "016x")
    assert "trace_id" not in _line(_record("after"))


def test_setup_writes_json_lines_and_refuses_unknown_formats() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    try:
        logs.setup("debug", "JSON", stream)
        logging.getLogger("prism.test").debug("ready on port %d", 8080)
    finally:
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
    assert orjson.loads(stream.getvalue().splitlines()[-1])["message"] == "ready on port 8080"
    with pytest.raises(ConfigError, match="PRISM_LOG_FORMAT"):
        logs.check_format("yaml")
