"""Process logging for ``prism gateway``, ``prism notify`` and ``prism dev``: text or JSON lines.

JSON: one object per line with ``time``, ``level``, ``logger``, ``message``, and when known ``node``,
``conn``, ``user`` (from :func:`bind`, a context variable set once per connection, so every record that
connection's task logs carries them), ``trace_id``/``span_id`` (the active span, when tracing is on) and
``exc`` (a traceback). Nothing else from a record is written: whatever is passed in ``extra=`` besides the
fields above (a payload, say) never reaches the output.
"""

from __future__ import annotations

import logging
import sys
import time
from contextvars import ContextVar
from typing import Any, TextIO

import orjson

from shared import tracing
from shared.errors import ConfigError

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# (node, conn, user) of the connection the running task serves; empty outside one.
_scope: ContextVar[tuple[str | None, str | None, str | None]] = ContextVar(
    "prism_log_scope", default=(None, None, None)
)
_FIELDS = ("node", "conn", "user")


def bind(node: str | None = None, conn: str | None = None, user: str | None = None) -> None:
    """Tag every record logged from the current task (and tasks it starts from now on) with these."""
    _scope.set((node, conn, user))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in zip(_FIELDS, _scope.get(), strict=True):
            value = getattr(record, name, value)  # extra= wins over the bound scope
            if value is not None:
                entry[name] = value if isinstance(value, str) else str(value)
        if tracing.tracer is not None and (ids := tracing.current_ids()) is not None:
            entry["trace_id"], entry["span_id"] = ids
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


def _iso(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def check_format(log_format: str) -> str:
    value = log_format.strip().lower()
    if value not in FORMATS:
        raise ConfigError(f"PRISM_LOG_FORMAT must be 'text' or 'json', got {log_format!r}")
    return value


def setup(level: str, log_format: str = "text", stream: TextIO | None = None) -> None:
    """Log ``level`` and above to ``stream`` (stderr) as ``text`` or ``json`` lines."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    if check_format(log_format) == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    logging.getLogger("websockets").setLevel(logging.WARNING)
