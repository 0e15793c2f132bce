"""What nats-py alone can receive on the server core: the floor under any Python gateway on NATS.

A subscriber process pinned to the server core takes every ``conn.bench.*`` message through a callback
that only counts, and reports its count on ``bench.progress`` every 1,000 messages.

    python -m loadtest.targets.nats_alone NATS_URL
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

import nats
import nats.errors
import uvloop
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from gateway.embedded_nats import NatsServer
from loadtest.procstat import machine_cores
from loadtest.targets.base import ServerProcess, python

REPORT_EVERY = 1000


async def main(url: str) -> None:
    nc = await nats.connect(url, pending_size=64 * 1024 * 1024)
    count = 0

    async def on_msg(msg: Msg) -> None:
        nonlocal count
        count += 1
        if count % REPORT_EVERY == 0:
            await nc.publish("bench.progress", b"%d" % count)

    async def on_reset(msg: Msg) -> None:
        nonlocal count
        count = 0
        await msg.respond(b"0")

    await nc.subscribe("conn.bench.*", cb=on_msg, pending_msgs_limit=1_000_000)
    await nc.subscribe("bench.reset", cb=on_reset)
    await nc.flush()
    print("nats-alone ready", flush=True)
    await asyncio.Event().wait()


class NatsAloneTarget:
    """The receiver above, pinned to the server core, with NATS beside the load generator."""

    name = "nats-py-alone"

    def __init__(self, core: int | None = 0, nats_core: int | None = 1) -> None:
        self.core = core
        self.nats_core = nats_core
        self.nats: NatsServer | None = None
        self.process: ServerProcess | None = None
        self.server_pid = 0
        self.received = 0
        self._nc: NatsClient | None = None
        self._progress: asyncio.Event = asyncio.Event()

    async def start(self, workdir: Path) -> None:
        cores = {self.nats_core} if self.nats_core in machine_cores() else None
        self.nats = NatsServer.start(
            workdir / "nats", log_file=workdir / "nats.log", name="alone", cores=cores
        )
        self.process = ServerProcess(
            [python(), "-m", "loadtest.targets.nats_alone", self.nats.url], self.core
        )
        await self.process.start(workdir / "nats-alone.log")
        self.server_pid = self.process.pid
        self._nc = await nats.connect(self.nats.url)

        async def on_progress(msg: Msg) -> None:
            self.received = max(self.received, int(msg.data))
            self._progress.set()

        await self._nc.subscribe("bench.progress", cb=on_progress)
        deadline = asyncio.get_running_loop().time() + 30
        while True:  # the receiver answers bench.reset once it is subscribed
            try:
                await self._nc.request("bench.reset", b"", timeout=1)
                break
            except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.05)

    async def reset(self) -> None:
        assert self._nc is not None
        await self._nc.request("bench.reset", b"", timeout=5)
        self.received = 0

    async def wait_until(self, target: int, timeout: float) -> bool:
        deadline = asyncio.get_running_loop().time() + timeout
        while self.received < target:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return False
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), min(left, 0.5))
        return True

    async def stop(self) -> None:
        if self._nc is not None:
            await self._nc.close()
        if self.process is not None:
            await self.process.stop()
        if self.nats is not None:
            self.nats.stop()


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main(sys.argv[1]))
