"""Coalesced writes for the load generator's publishers (NATS, Redis, the Channels backend).

A publish appends to a buffer that is written once per loop pass (or when large), and every
:data:`YIELD_EVERY` publishes the publisher yields, so the generator's clients get served between
bursts. The generator shares its core with the broker: each yield is a write the broker must wake up
for, and with a yield every 32 publishes (4.5 KB writes) the generator's core, not the server's, set
the 1:1 peak (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio

_FLUSH_AT = 64 * 1024
YIELD_EVERY = 256


class BatchedWriter:
    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self._out = bytearray()
        self._pending = 0

    async def append(self, *parts: bytes) -> None:
        out = self._out
        if not out:
            asyncio.get_running_loop().call_soon(self.write)
        for part in parts:
            out += part
        if len(out) >= _FLUSH_AT:
            self.write()
        self._pending += 1
        if self._pending >= YIELD_EVERY:
            self._pending = 0
            await asyncio.sleep(0)

    def write(self) -> None:
        if self._out and not self.transport.is_closing():
            self.transport.write(bytes(self._out))
            self._out.clear()

    def close(self) -> None:
        self.write()
        self.transport.close()
