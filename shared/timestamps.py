"""Timestamps as every Prism event and presence value writes them: UTC ISO 8601, milliseconds, ``Z``."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def iso(timestamp: float) -> str:
    """``timestamp`` (seconds since the epoch) as ``2025-01-15T09:30:00.123Z``."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_now() -> str:
    return iso(time.time())
