"""OpenTelemetry traces across NATS: W3C trace context (``traceparent``/``tracestate``) in NATS headers.

Tracing is off unless the process is configured for it (:func:`configure`, from the standard ``OTEL_*``
variables) or a test installs a provider (:func:`use`). While it is off :data:`tracer` is ``None``, and
every caller on a hot path checks exactly that before doing anything: no span, no header parsed, no
header added.

    from shared import tracing
    if tracing.tracer is not None:
        with tracing.tracer.start_as_current_span("...", context=tracing.extract(msg.headers)): ...
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Tracer

log = logging.getLogger("prism.tracing")

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
INSTRUMENTATION = "prism"

# None while tracing is off: the one thing hot paths check.
tracer: Tracer | None = None


class _HeaderGetter(Getter[Mapping[str, str]]):
    """Reads NATS headers: exact key first (W3C names are lower case), then any letter case."""

    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get(key)
        if value is None:
            lowered = key.lower()
            for name, found in carrier.items():
                if name.lower() == lowered:
                    value = found
                    break
        return None if value is None else [value]

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return list(carrier)


_GETTER = _HeaderGetter()


def enabled_by(environ: Mapping[str, str]) -> bool:
    """Whether the environment asks for traces: ``OTEL_TRACES_EXPORTER`` set to something other than
    ``none`` (and ``OTEL_SDK_DISABLED`` not true). Unlike the SDK's own default, unset means off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = [e.strip().lower() for e in environ.get("OTEL_TRACES_EXPORTER", "").split(",")]
    return any(e and e != "none" for e in exporters)


def configure(service_name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Set up a TracerProvider exporting as ``OTEL_TRACES_EXPORTER`` says (``otlp``: OTLP over HTTP to
    ``OTEL_EXPORTER_OTLP_ENDPOINT``; ``console``: stdout), when it says anything. The sampler is the
    SDK's (``OTEL_TRACES_SAMPLER``/``OTEL_TRACES_SAMPLER_ARG``, default parent-based always-on), the
    service name ``OTEL_SERVICE_NAME`` or ``service_name``. Returns whether tracing is on."""
    environ = os.environ if environ is None else environ
    if not enabled_by(environ):
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    attributes: dict[str, Any] = {}
    if not environ.get("OTEL_SERVICE_NAME"):
        attributes[SERVICE_NAME] = service_name
    provider = TracerProvider(resource=Resource.create(attributes))
    for name in {e.strip().lower() for e in environ["OTEL_TRACES_EXPORTER"].split(",")} - {"", "none"}:
        exporter: SpanExporter
        if name == "console":
            exporter = ConsoleSpanExporter()
        elif name in ("otlp", "otlp_proto_http"):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        else:
            from shared.errors import ConfigError

            raise ConfigError(f"OTEL_TRACES_EXPORTER={name!r}: Prism exports traces with otlp or console")
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    use(provider)
    log.info("tracing on: exporting spans with %s", environ["OTEL_TRACES_EXPORTER"])
    return True


def use(provider: trace.TracerProvider | None) -> None:
    """Trace with ``provider`` from now on, or stop tracing (``None``). Tests install an in-memory one."""
    global tracer
    tracer = None if provider is None else provider.get_tracer(INSTRUMENTATION)


def extract(headers: Mapping[str, str] | None) -> Context | None:
    """The remote span context in NATS ``headers``, or None when they carry none."""
    if not headers:
        return None
    context = propagate.extract(headers, getter=_GETTER)
    if not trace.get_current_span(context).get_span_context().is_valid:
        return None
    return context


def inject(headers: dict[str, str] | None = None) -> dict[str, str]:
    """``headers`` (or a new dict) with the current span's ``traceparent`` (and ``tracestate``) added."""
    carrier = {} if headers is None else headers
    propagate.inject(carrier)
    return carrier


def header_lines() -> bytes:
    """The current span's context as NATS header lines (``Key: value\\r\\n``), to append to a
    pre-encoded header block; empty when no span is active."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in carrier.items() if _safe(v))


def _safe(value: str) -> bool:
    return "\r" not in value and "\n" not in value


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex of the active span, or None (also when tracing is off)."""
    if tracer is None:
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")
