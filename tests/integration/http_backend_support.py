"""A real HTTP backend for tests: an aiohttp server on a free loopback port that records every call,
verifies its signature, and answers as the test tells it to (per path, a queue of answers)."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from shared import http_signing

SECRET = "test-signing-secret-" + "x" * 20


@dataclass
class Call:
    path: str
    body: dict[str, Any]
    raw: bytes
    headers: dict[str, str]
    signed: bool  # the signature verified under SECRET


Answer = Callable[[Call], Awaitable[web.StreamResponse]]


def reply(status: int = 200, body: Any = None, delay: float = 0.0) -> Answer:
    """An answer: after ``delay`` seconds, ``status`` with ``body`` (bytes as they are, else JSON)."""

    async def answer(call: Call) -> web.StreamResponse:
        if delay:
            await asyncio.sleep(delay)
        if body is None:
            return web.Response(status=status)
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        return web.Response(status=status, body=data)

    return answer


async def echo(call: Call) -> web.StreamResponse:
    """The default for /event: answer the event's data."""
    return web.Response(body=orjson.dumps(call.body.get("data")))


@dataclass
class RecordingBackend:
    calls: list[Call] = field(default_factory=list)
    answers: dict[str, deque[Answer]] = field(default_factory=lambda: defaultdict(deque))
    default: dict[str, Answer] = field(default_factory=dict)
    port: int = 0
    _runner: web.AppRunner | None = None
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> RecordingBackend:
        app = web.Application()
        app.router.add_post("/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def then(self, path: str, *answers: Answer) -> None:
        """Answer the next calls to ``/path`` with ``answers``, in order (then the default again)."""
        self.answers[path].extend(answers)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        signed = http_signing.verify(
            request.headers.get(http_signing.SIGNATURE_HEADER), raw, [SECRET.encode()], time.time()
        )
        path = request.match_info["path"]
        call = Call(path, orjson.loads(raw), raw, dict(request.headers), signed)
        self.calls.append(call)
        self._arrived.set()
        queued = self.answers[path]
        answer = queued.popleft() if queued else self.default.get(path, echo if path == "event" else reply())
        return await answer(call)

    def of(self, path: str) -> list[Call]:
        return [c for c in self.calls if c.path == path]

    async def wait_for(self, path: str, count: int = 1, timeout: float = 10.0) -> list[Call]:
        """The calls to ``/path`` once there are at least ``count`` of them."""
        deadline = time.monotonic() + timeout
        while len(self.of(path)) < count:
            self._arrived.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{len(self.of(path))} calls to /{path}, expected {count}")
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                continue
        return self.of(path)


def routes_file(directory: Path, *backends: dict[str, Any]) -> str:
    """Write a routes file with these ``[[backend]]`` tables; return its path."""
    lines: list[str] = []
    for backend in backends:
        lines.append("[[backend]]")
        for key, value in backend.items():
            lines.append(f"{key} = {_toml(value)}")
        lines.append("")
    path = directory / "http-backends.toml"
    path.write_text("\n".join(lines))
    return str(path)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return orjson.dumps(value).decode()
    return "[" + ", ".join(_toml(v) for v in value) + "]"
