"""One WebSocket connection of a client: dialling it (handshake, then the welcome frame), and the commands
waiting for their answers on it."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from shared.errors import ClientError, ConnectionLost


class Pending:
    """A command sent on a link, waiting for its ``ok``, ``error`` or ``reply`` frame."""

    __slots__ = ("future", "kind", "recover", "room")

    def __init__(
        self, future: asyncio.Future[dict[str, Any]], kind: str, room: str | None, recover: bool = False
    ) -> None:
        self.future = future
        self.kind = kind  # "join", "leave", "rejoin", "request" or "refresh"
        self.room = room
        self.recover = recover  # a join with positions


class Link:
    """One WebSocket connection and what belongs to it."""

    __slots__ = ("closed", "index", "pending", "reader", "url", "welcome", "ws")

    def __init__(self, ws: ClientConnection, welcome: dict[str, Any], url: str, index: int) -> None:
        self.ws = ws
        self.welcome = welcome
        self.url = url
        self.index = index  # of ``url`` in the client's URLs
        self.pending: dict[int | str, Pending] = {}
        self.closed = asyncio.Event()  # set once the reader has finished and failed ``pending``
        self.reader: asyncio.Task[None] | None = None


def with_user(url: str, user: str) -> str:
    """``url`` with ``?user=<user>`` (or ``&user=``) appended."""
    return with_query(url, {"user": user})


def with_query(url: str, query: dict[str, str]) -> str:
    """``url`` with ``query`` appended to its query string."""
    return url + ("&" if "?" in url else "?") + urlencode(query)


async def dial(
    url: str, open_timeout: float, options: dict[str, Any]
) -> tuple[ClientConnection, dict[str, Any]]:
    """Open the WebSocket and read the welcome frame, within ``open_timeout`` seconds each. ``options``
    go to :func:`websockets.asyncio.client.connect`. A close before the welcome raises
    :class:`ConnectionLost` with its code; a first frame that is not a welcome, :class:`ClientError`."""
    ws = await connect(url, open_timeout=open_timeout, **options)
    try:
        try:
            first = await asyncio.wait_for(ws.recv(), open_timeout)
        except ConnectionClosed as exc:
            raise ConnectionLost(*close_of(ws, exc)) from None
        welcome = orjson.loads(first)
        if not isinstance(welcome, dict) or welcome.get("prism") != "welcome":
            raise ClientError(f"expected a welcome frame first, got {first!r:.200}")
    except BaseException:
        await ws.close()
        raise
    return ws, welcome


def close_of(ws: ClientConnection, exc: ConnectionClosed | None = None) -> tuple[int | None, str]:
    """The close code and reason of ``ws`` (or of ``exc`` while ``ws`` is still closing)."""
    if ws.close_code is not None:
        return ws.close_code, ws.close_reason or ""
    if exc is not None and exc.rcvd is not None:
        return exc.rcvd.code, exc.rcvd.reason
    return None, ""
