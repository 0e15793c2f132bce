"""shared/tracing.py: when tracing is on, and W3C trace context in and out of NATS headers."""

from __future__ import annotations

from shared import tracing
from tests.tracing_support import Traces, traces

__all__ = ["traces"]  # the fixture, imported for the tests below

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_tracing_is_on_only_when_an_exporter_is_named() -> None:
    assert not tracing.enabled_by({})
    assert not tracing.enabled_by({"OTEL_TRACES_EXPORTER": "none"})
    assert not tracing.enabled_by({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"})
    assert tracing.enabled_by({"OTEL_TRACES_EXPORTER": "otlp"})
    assert tracing.enabled_by({"OTEL_TRACES_EXPORTER": "console,none"})
    assert tracing.configure("prism-test", {}) is False
    assert tracing.tracer is None


def test_extract_reads_traceparent_in_any_letter_case() -> None:
    assert tracing.extract(None) is None
    assert tracing.extract({}) is None
    assert tracing.extract({"traceparent": "garbage"}) is None
    for key in ("traceparent", "Traceparent", "TRACEPARENT"):
        assert tracing.extract({key: PARENT, "Prism-Conn": "n1.x"}) is not None


def test_inject_and_header_lines_carry_the_current_span(traces: Traces) -> None:
    assert tracing.header_lines() == b""
    assert tracing.inject() == {}
    assert tracing.tracer is not None
    with tracing.tracer.start_as_current_span("event", context=tracing.extract({"traceparent": PARENT})):
        headers = tracing.inject({"Prism-Conn": "n1.x"})
        lines = tracing.header_lines()
        ids = tracing.current_ids()
    assert headers["Prism-Conn"] == "n1.x"
    assert headers["traceparent"].split("-")[1] == "0af7651916cd43dd8448eb211c80319c"
    assert lines == f"traceparent: {headers['traceparent']}\r\n".encode()
    assert ids is not None
    assert ids[0] == "0af7651916cd43dd8448eb211c80319c"
    assert tracing.current_ids() is None
