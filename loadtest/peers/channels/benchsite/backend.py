"""The Django backend that publishes: what the load generator asks for, through ``channel_layer``.

    python -m benchsite.backend PORT    (DJANGO_SETTINGS_MODULE=benchsite.settings)

This is what a Django view or worker does to reach WebSocket clients: ``group_send`` to a group or
``send`` to one consumer's channel, through channels_redis, so the fan-out goes through Redis to the
ASGI server. Frames from the generator (one TCP connection): a 4-byte big-endian length, then
``R<room>\\n<text>`` (group ``room.<room>``), ``U<user>\\n<text>`` (group ``user.<user>``),
``C<channel>\\n<text>`` (one consumer), or ``F``, answered ``F`` once every earlier publish is done.
"""

from __future__ import annotations

import asyncio
import os
import sys

import django  # type: ignore[import-not-found]
import uvloop
from channels.layers import get_channel_layer  # type: ignore[import-untyped]

# Publishes in flight at once, as concurrent requests of a backend would be; reading waits beyond it.
IN_FLIGHT = 64


class Backend:
    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self.gate = asyncio.Semaphore(IN_FLIGHT)
        self.tasks: set[asyncio.Task[None]] = set()
        self.failures = 0

    async def _publish(self, kind: bytes, name: str, text: str) -> None:
        message = {"type": "bench.deliver", "text": text}
        if kind == b"C":
            await self.layer.send(name, message)
        else:
            await self.layer.group_send(f"room.{name}" if kind == b"R" else f"user.{name}", message)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.gate.release()
        if not task.cancelled() and task.exception() is not None:
            self.failures += 1
            if self.failures <= 5:  # enough to see why, without a log line per message
                print(f"publish failed: {task.exception()!r}", file=sys.stderr, flush=True)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                size = int.from_bytes(await reader.readexactly(4), "big")
                frame = await reader.readexactly(size)
                if frame == b"F":
                    await asyncio.gather(*self.tasks, return_exceptions=True)
                    writer.write(b"F")
                    continue
                head, _, body = frame[1:].partition(b"\n")
                await self.gate.acquire()
                task = asyncio.ensure_future(self._publish(frame[:1], head.decode(), body.decode()))
                self.tasks.add(task)
                task.add_done_callback(self._done)
        except asyncio.IncompleteReadError:
            pass  # the generator closed its publisher
        finally:
            writer.close()


async def main(port: int) -> None:
    backend = Backend()
    server = await asyncio.start_server(backend.serve, "127.0.0.1", port)
    print(f"channels backend listening on {port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite.settings")
    django.setup()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main(int(sys.argv[1])))
