"""An in-memory span exporter installed as Prism's tracer for one test (nodes run in the test process)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared import tracing


class Traces:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        found = self.exporter.get_finished_spans()
        return [s for s in found if name is None or s.name == name]


@pytest.fixture
def traces() -> Iterator[Traces]:
    """Tracing on for this test (set before nodes start: they decide at start whether to trace)."""
    installed = Traces()
    tracing.use(installed.provider)
    try:
        yield installed
    finally:
        tracing.use(None)
        installed.provider.shutdown()
