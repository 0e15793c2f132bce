"""An asyncio Python client for Prism: connect, read the welcome, join rooms, send events and requests,
and iterate the messages backends deliver.

    async with await PrismClient.connect("ws://localhost:8080/ws", user="alice") as client:
        await client.join("lobby")
        reply = await client.request("echo", {"hi": 1})
        message = await client.receive()          # next delivery: bytes or str, unchanged

Run ``python -m shared.client URL`` for a tiny interactive console that prints what arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from shared import frames
from shared.errors import ClientError, ConnectionLost, RequestFailed

Delivery = str | bytes


class PrismClient:
    def __init__(self, ws: ClientConnection, welcome: dict[str, Any], max_queue: int = 10_000) -> None:
        self.ws = ws
        self.welcome = welcome
        self.conn_id: str = welcome["conn"]
        self.node: str = welcome["node"]
        self.user: str | None = welcome.get("user")
        self._refs = itertools.count(1)
        self._pending: dict[int | str, asyncio.Future[dict[str, Any]]] = {}
        self._deliveries: asyncio.Queue[Delivery] = asyncio.Queue(max_queue)
        self.errors: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def connect(
        cls, url: str, *, user: str | None = None, open_timeout: float = 10.0, **kwargs: Any
    ) -> PrismClient:
        """Open the WebSocket and wait for the welcome frame."""
        if user is not None:
            url += ("&" if "?" in url else "?") + urlencode({"user": user})
        kwargs.setdefault("compression", None)
        ws = await connect(url, open_timeout=open_timeout, **kwargs)
        try:
            first = await asyncio.wait_for(ws.recv(), open_timeout)
            welcome = orjson.loads(first)
            if not isinstance(welcome, dict) or welcome.get("prism") != "welcome":
                raise ClientError(f"expected a welcome frame first, got {first!r:.200}")
        except BaseException:
            await ws.close()
            raise
        return cls(ws, welcome)

    async def __aenter__(self) -> PrismClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.ws.close(code, reason)
        await asyncio.gather(self._reader, return_exceptions=True)

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code

    async def wait_closed(self) -> int | None:
        """Wait until the connection is closed; return its close code."""
        await asyncio.gather(self._reader, return_exceptions=True)
        return self.ws.close_code

    # -- commands ----------------------------------------------------------------------------------
    async def join(self, room: str, timeout: float = 10.0) -> None:
        await self._command(lambda ref: frames.join(room, ref), timeout)

    async def leave(self, room: str, timeout: float = 10.0) -> None:
        await self._command(lambda ref: frames.leave(room, ref), timeout)

    async def send_event(self, name: str, data: Any = None) -> None:
        """Fire-and-forget event to the backends (subject ``client.event.<name>``)."""
        await self.ws.send(frames.event(name, data), text=True)

    async def request(self, name: str, data: Any = None, timeout: float = 10.0) -> Any:
        """Send an event as a request and return the backend's reply ``data``."""
        answer = await self._command(lambda ref: frames.event(name, data, ref), timeout)
        return answer.get("data")

    async def send(self, message: str | bytes) -> None:
        """Send a raw frame (published on ``client.message``)."""
        await self.ws.send(message)

    async def _command(self, build: Any, timeout: float) -> dict[str, Any]:
        ref = next(self._refs)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ref] = future
        try:
            await self.ws.send(build(ref), text=True)
            answer = await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(ref, None)
        if answer.get("prism") == "error":
            raise RequestFailed(str(answer.get("code")), str(answer.get("message")))
        return answer

    # -- deliveries --------------------------------------------------------------------------------
    async def receive(self, timeout: float | None = None) -> Delivery:
        """The next message from a backend, exactly as it was published."""
        get = self._deliveries.get()
        if not self._deliveries.empty() or not self._reader.done():
            return await asyncio.wait_for(get, timeout)
        get.close()
        raise ConnectionLost(self.ws.close_code, self.ws.close_reason or "")

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Delivery]:
        while True:
            try:
                yield await self.receive()
            except ConnectionLost:
                return

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                if frames.is_prism_frame(message):
                    self._dispatch(orjson.loads(message))
                else:
                    await self._deliveries.put(message)
        except ConnectionClosed:
            pass
        finally:
            lost = ConnectionLost(self.ws.close_code, self.ws.close_reason or "")
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(lost)

    def _dispatch(self, frame: dict[str, Any]) -> None:
        ref = frame.get("ref")
        future = self._pending.get(ref) if ref is not None else None
        if future is not None and not future.done():
            future.set_result(frame)
        elif frame.get("prism") == "error":
            self.errors.put_nowait(frame)


async def _console(url: str) -> None:
    async with await PrismClient.connect(url) as client:
        print(f"connected: conn={client.conn_id} node={client.node} user={client.user}", flush=True)
        async for message in client:
            print(
                message if isinstance(message, str) else f"<{len(message)} bytes> {message!r:.80}", flush=True
            )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m shared.client ws://localhost:8080/ws?user=alice", file=sys.stderr)
        raise SystemExit(2)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_console(sys.argv[1]))
