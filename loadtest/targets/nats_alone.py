"""What nats-py alone can receive on the server core: the floor under any Python gateway on NATS.

A subscriber process pinned to the server core takes every ``conn.bench.*`` message through a callback
that only counts, and reports its count on ``bench.progress`` every 1,000 messages (and when it reaches
the count ``bench.expect`` names). Reset with ``{"time": true}`` (the capacity search's steps), it also
times the messages to the connections a WebSocket fleet samples (``conn.bench.c<i>``, every
``SAMPLE_EVERY``-th), as those clients do, and ``bench.stats`` answers its count and latency percentiles.

    python -m loadtest.targets.nats_alone NATS_URL
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from array import array
from dataclasses import dataclass
from pathlib import Path

import nats
import nats.errors
import uvloop
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from gateway.embedded_nats import NatsServer
from loadtest import payload
from loadtest.fleet import SAMPLE_EVERY
from loadtest.procstat import machine_cores
from loadtest.stats import Latency, summarize
from loadtest.targets.base import ServerProcess, python
from shared.nats_connection import flush_all

REPORT_EVERY = 1000


async def main(url: str) -> None:
    nc = await nats.connect(url, pending_size=64 * 1024 * 1024)
    count = 0
    generation = 0  # which reset a progress report belongs to: one sent before a reset is stale after it
    expect = -1
    timing = False
    latencies: array[int] = array("q")

    async def on_msg(msg: Msg) -> None:
        nonlocal count
        count += 1
        # Only the connections a WebSocket fleet samples get freshly stamped messages; the others get one
        # prebuilt message whose stamp is as old as the run.
        if timing and int(msg.subject.rpartition(".c")[2]) % SAMPLE_EVERY == 0:
            stamp = payload.sent_at(msg.data)
            if stamp is not None:
                latencies.append(time.time_ns() - stamp)
        if count % REPORT_EVERY == 0 or count == expect:
            await nc.publish("bench.progress", b"%d %d" % (generation, count))

    async def on_reset(msg: Msg) -> None:
        nonlocal count, generation, expect, timing, latencies
        count, expect = 0, -1
        generation += 1
        timing = bool(msg.data and json.loads(msg.data).get("time"))
        latencies = array("q")
        await msg.respond(b"%d" % generation)

    async def on_expect(msg: Msg) -> None:
        nonlocal expect
        expect = int(msg.data)
        await msg.respond(b"%d" % count)
        if count >= expect:
            await nc.publish("bench.progress", b"%d %d" % (generation, count))

    async def on_stats(msg: Msg) -> None:
        latency = summarize(latencies)
        await msg.respond(
            json.dumps({"count": count, "latency": latency.as_dict() if latency else None}).encode()
        )

    await nc.subscribe("conn.bench.*", cb=on_msg, pending_msgs_limit=1_000_000)
    await nc.subscribe("bench.reset", cb=on_reset)
    await nc.subscribe("bench.expect", cb=on_expect)
    await nc.subscribe("bench.stats", cb=on_stats)
    await flush_all(nc)
    print("nats-alone ready", flush=True)
    await asyncio.Event().wait()


@dataclass(frozen=True)
class ReceiverStats:
    count: int
    latency: Latency | None


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
        self._generation = -1

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
            generation, count = msg.data.split()
            if int(generation) == self._generation:
                self.received = max(self.received, int(count))
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

    @property
    def helper_pids(self) -> list[int]:
        """nats-server, beside the load generator."""
        return [self.nats.pid] if self.nats is not None else []

    async def reset(self, timing: bool = False) -> None:
        """Zero the receiver's count; ``timing``: also time the messages that carry their publish time."""
        assert self._nc is not None
        answer = await self._nc.request("bench.reset", b'{"time": true}' if timing else b"", timeout=5)
        self._generation = int(answer.data)
        self.received = 0

    async def expect(self, count: int, timeout: float) -> bool:
        """Wait until the receiver has ``count`` messages (it reports that count exactly)."""
        assert self._nc is not None
        await self._nc.request("bench.expect", b"%d" % count, timeout=5)
        return await self.wait_until(count, timeout)

    async def stats(self) -> ReceiverStats:
        assert self._nc is not None
        answer = json.loads((await self._nc.request("bench.stats", b"", timeout=10)).data)
        latency = answer["latency"]
        return ReceiverStats(int(answer["count"]), Latency(**latency) if latency else None)

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
