"""The one place that says what a ``client.connect`` / ``client.disconnect`` event carries: its identity
headers and its JSON body, whether a connection's own node publishes it or the survivor that sweeps a
dead node does (docs/protocol.md section 7)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gateway.core.presence_writes import ConnRecord
from shared import headers as h


def identity_headers(record: ConnRecord) -> dict[str, str]:
    """The ``Prism-*`` headers naming a connection, as on every message it causes."""
    headers = {
        h.CONN: record.conn,
        h.NODE: record.node,
        h.ROUTE: record.route or "/",
        h.REMOTE: record.remote,
    }
    if record.user is not None:
        headers[h.USER] = record.user
    return headers


def event_body(record: ConnRecord, **extra: Any) -> dict[str, Any]:
    """A lifecycle event's body: the connection, then what the event adds (``code``, ``rooms``, ...)."""
    return {
        "conn": record.conn,
        "user": record.user,
        "node": record.node,
        "route": record.route,
        "remote": record.remote,
        "connected_at": record.connected_at,
        **extra,
    }


def disconnect_details(
    code: int | None, reason: str, rooms: Iterable[str], disconnected_at: str
) -> dict[str, Any]:
    """What a ``client.disconnect`` says besides the connection (all of it is also what HTTP disconnect
    backends get): the close ``code`` and ``reason``, the ``rooms`` it was in (sorted), and when. A sweep
    adds ``swept_by``."""
    return {"code": code, "reason": reason, "rooms": sorted(rooms), "disconnected_at": disconnected_at}
