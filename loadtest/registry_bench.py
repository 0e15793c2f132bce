"""The presence registry benchmark: KV writes per connect and reconnect, connect and reconnect rates,
the per-leader write ceiling, sweep times, and a projection for a million connections.

    python -m loadtest.registry_bench                 # 3 nats-servers (R3, file storage) on loopback
    python -m loadtest.registry_bench --quick         # smaller counts, for a smoke run

Everything runs against a NATS cluster this command starts in a temp dir and stops. Nodes are
:class:`~loadtest.registry.RegistryNode`: a gateway node's writer, heartbeats and sweeps without its
WebSocket server, so that tens of thousands of connections can be registered without sockets. The
ceiling of one stream leader is measured with a raw NATS client (acknowledged KV puts pipelined in a
window), so that Python's cost per write is not what is measured. Figures go to stdout as Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse

import nats

from gateway.config import GatewayConfig
from gateway.embedded_nats import NatsCluster
from gateway.io.presence_store import BucketOptions, open_layout
from gateway.node import Node
from loadtest.registry import RegistryNode
from shared import presence_keys as keys
from shared.backend import PrismBackend

# A conn key's value, as large as a real one.
VALUE = (
    b'{"conn":"bench.c1","node":"bench","user":"u1","route":"/ws","remote":"127.0.0.1:1",'
    b'"connected_at":"2026-01-01T00:00:00.000Z"}'
)


# -- the raw writer for the ceiling -----------------------------------------------------------------------
class _AckCounter(asyncio.Protocol):
    """Counts the JetStream acknowledgements that come back on ``_INBOX.kvbench.*``, without parsing
    more than the MSG line and a search for ``"error"``."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.acks = 0
        self.errors = 0
        self.pong = asyncio.Event()
        self.changed = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        start = 0
        while True:
            end = buf.find(b"\r\n", start)
            if end < 0:
                break
            line = bytes(buf[start:end])
            if line.startswith(b"MSG "):
                size = int(line.rsplit(b" ", 1)[1])
                if len(buf) < end + 2 + size + 2:
                    break
                payload = bytes(buf[end + 2 : end + 2 + size])
                if b'"error"' in payload:
                    self.errors += 1
                else:
                    self.acks += 1
                start = end + 2 + size + 2
                self.changed.set()
                continue
            if line == b"PING" and self.transport is not None:
                self.transport.write(b"PONG\r\n")
            elif line == b"PONG":
                self.pong.set()
            start = end + 2
        del buf[:start]


async def raw_put_rate(url: str, buckets: list[str], seconds: float, window: int) -> dict[str, float]:
    """Acknowledged KV puts per second into ``buckets`` (round robin), at most ``window`` in flight."""
    parsed = urlparse(url)
    loop = asyncio.get_running_loop()
    transport, counter = await loop.create_connection(
        _AckCounter, parsed.hostname or "127.0.0.1", parsed.port or 4222
    )
    transport.write(
        b'CONNECT {"verbose":false,"pedantic":false,"headers":true}\r\nSUB _INBOX.kvbench.* 1\r\nPING\r\n'
    )
    await counter.pong.wait()
    subjects = [f"$KV.{b}.conn.bench.".encode() for b in buckets]
    sent = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        room = window - (sent - counter.acks - counter.errors)
        if room <= 0:
            counter.changed.clear()
            await counter.changed.wait()
            continue
        chunk = []
        for i in range(sent, sent + room):
            subject = subjects[i % len(subjects)] + b"c%d" % (i % 100_000)
            chunk.append(b"PUB %s _INBOX.kvbench.%d %d\r\n%s\r\n" % (subject, i, len(VALUE), VALUE))
        transport.write(b"".join(chunk))
        sent += room
        await asyncio.sleep(0)
    while counter.acks + counter.errors < sent and time.perf_counter() < deadline + 10:
        counter.changed.clear()
        await asyncio.wait_for(counter.changed.wait(), 10)
    elapsed = time.perf_counter() - started
    transport.close()
    return {
        "acks": counter.acks,
        "errors": counter.errors,
        "seconds": elapsed,
        "rate": counter.acks / elapsed,
    }


# -- scenarios -------------------------------------------------------------------------------------------
@dataclass
class Bench:
    urls: str
    options: BucketOptions
    quick: bool

    async def node(self, node_id: str, options: BucketOptions | None = None) -> RegistryNode:
        return await RegistryNode.start(self.urls, node_id, options or self.options)

    async def writes_per_change(self) -> dict[str, float]:
        node = await self.node("wpc")
        count = 500
        named = await node.connect([f"user{i}" for i in range(count)], rooms=("lobby",))
        per_connect = node.writes / count
        before = node.writes
        await node.close(named)
        await node.connect([f"user{i}" for i in range(count)], rooms=("lobby",))
        per_reconnect = (node.writes - before) / count
        anon_before = node.writes
        await node.connect([None] * count)
        per_anonymous = (node.writes - anon_before) / count
        await node.stop()
        return {
            "connect_1_room": per_connect,
            "reconnect_1_room": per_reconnect,
            "connect_anonymous": per_anonymous,
        }

    async def connect_rates(self, count: int, options: BucketOptions, label: str) -> dict[str, float]:
        """One node's connect storm and reconnect storm through the real writer (Python included)."""
        node = await self.node(f"rate-{label}", options)
        users = [f"user{i}" for i in range(count)]
        started = time.perf_counter()
        records = await node.connect(users, rooms=("lobby",))
        connects = count / (time.perf_counter() - started)
        started = time.perf_counter()
        await node.close(records)
        await node.connect(users, rooms=("lobby",))
        reconnects = count / (time.perf_counter() - started)
        await node.stop()
        return {"connects_per_s": connects, "reconnects_per_s": reconnects}

    async def ceiling(self, buckets: list[str], workers: int, seconds: float) -> dict[str, float]:
        """Acknowledged puts per second into ``buckets`` from ``workers`` processes at once."""
        url = self.urls.split(",")[0]
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "loadtest.registry_bench",
                "--worker",
                url,
                ",".join(buckets),
                str(seconds),
                stdout=asyncio.subprocess.PIPE,
            )
            for _ in range(workers)
        ]
        results = [json.loads((await p.communicate())[0]) for p in procs]
        return {
            "rate": sum(r["rate"] for r in results),
            "errors": sum(r["errors"] for r in results),
        }

    async def sweep(self, count: int) -> dict[str, float]:
        """A node of ``count`` connections (half named, one room each), in a process of its own, is
        SIGKILLed; two survivors sweep it. Returns the time from the kill to the last disconnect event,
        and the sweep's own share of it."""
        survivors = [await self.node(f"survivor{i}") for i in (1, 2)]
        victim_id = f"victim{count}"
        nc = await nats.connect(servers=self.urls.split(","))
        seen: set[str] = set()

        async def on_disconnect(msg: Any) -> None:
            seen.add(json.loads(msg.data)["conn"])

        await nc.subscribe("client.disconnect", cb=on_disconnect)
        victim = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "loadtest.registry_bench", "--victim", self.urls, str(count), victim_id,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            assert victim.stdout is not None
            assert (await victim.stdout.readline()).strip() == b"registered"
        finally:
            victim.kill()  # SIGKILL: the death being measured (and no orphan if anything failed)
            died = time.perf_counter()
            await victim.wait()
        conns = {f"{victim_id}.c{i}" for i in range(count)}  # RegistryNode numbers its connections
        while not seen >= conns or not (survivors[0].sweeps or survivors[1].sweeps):
            await asyncio.sleep(0.05)  # a benchmark's sampling interval, not a test's synchronisation
            if time.perf_counter() - died > 120:
                raise TimeoutError(f"sweep of {count} incomplete after 120 s ({len(seen)} events)")
        events_done = time.perf_counter()
        sweep_seconds = max(s for node in survivors for _, s in node.sweeps)
        js = nc.jetstream()
        layout, _ = await open_layout(js, self.options)
        leftover = 0
        for bucket in layout.shard_buckets:
            for key_filter in keys.node_filters(victim_id):
                subjects = keys.kv_subject(bucket, key_filter)
                info = await js.stream_info(keys.kv_stream(bucket), subjects_filter=subjects)
                leftover += len(info.state.subjects or {})
        await nc.close()
        for node in survivors:
            await node.stop()
        return {
            "connections": count,
            "death_to_complete_s": events_done - died,
            "sweep_s": sweep_seconds,
            "leftover_keys": leftover,
        }

    async def room_query(self, members: int) -> dict[str, float]:
        """``presence.room`` of one room of ``members`` connections, answered by a real gateway node."""
        config = GatewayConfig(
            nats_url=self.urls,
            host="127.0.0.1",
            port=0,
            node_id="answerer",
            presence_replicas=self.options.replicas,
            presence_storage=self.options.storage,
            drain_seconds=0,
        )
        answerer = Node(config)
        await answerer.start()
        crowd = await self.node("crowd")
        await crowd.connect([None] * members, rooms=("hall",))
        nc = await nats.connect(servers=self.urls.split(","))
        started = time.perf_counter()
        answer = await PrismBackend(nc).room_presence("hall", timeout=30)
        elapsed = time.perf_counter() - started
        assert answer["count"] == members == len(answer["members"])
        await nc.close()
        await crowd.stop()
        await answerer.stop()
        return {"members": members, "pages": answer["pages"], "seconds": elapsed}


def projection(ceiling: float, writes_per_reconnect: float, shards: int) -> dict[str, float]:
    """1,000,000 connections on 20-50 nodes, 10,000 reconnects/s (a deploy): the write load per leader."""
    reconnects = 10_000
    total = reconnects * writes_per_reconnect
    per_leader = total / shards
    return {"writes_per_s": total, "per_leader": per_leader, "headroom": ceiling / per_leader}


async def be_a_victim(urls: str, count: int, node_id: str) -> None:
    """The node a sweep benchmark kills: register ``count`` connections (``<node_id>.c0`` ...), say so, then
    beat on until SIGKILLed."""
    node = await RegistryNode.start(urls, node_id, BucketOptions(replicas=3, storage="file"))
    await node.connect([f"u{i}" if i % 2 else None for i in range(count)], rooms=("lobby",))
    print("registered", flush=True)
    await asyncio.Event().wait()


PHASES = ("writes", "ceiling", "storms", "sweeps", "room")


async def run(quick: bool, phases: tuple[str, ...] = PHASES) -> None:
    with tempfile.TemporaryDirectory(prefix="prism-registry-bench-") as tmp:
        cluster = NatsCluster.start(Path(tmp), 3, "bench")
        try:
            options = BucketOptions(replicas=3, storage="file")
            bench = Bench(cluster.urls, options, quick)
            # Create the registry and every bucket before anything is timed.
            first = await bench.node("setup")
            await first.stop()
            shards, cpus = options.shards, os.cpu_count()
            print(f"# registry benchmark: 3 nats-servers, R3 file storage, {shards} shards, cpus={cpus}")
            one = BucketOptions(name="single", replicas=3, storage="file", shards=1)
            await (await bench.node("setup-single", one)).stop()
            if "writes" in phases:
                writes = await bench.writes_per_change()
                print("writes per change:", json.dumps(writes))
            if "ceiling" in phases:
                seconds = 3.0 if quick else 8.0
                ceiling_one = await bench.ceiling(["single-0"], 2, seconds)
                print("ceiling, 1 bucket (1 leader), 2 writers:", json.dumps(ceiling_one))
                shard_buckets = list(keys.Layout("presence", options.shards).shard_buckets)
                ceiling_all = await bench.ceiling(shard_buckets, 2, seconds)
                print(f"ceiling, {options.shards} buckets, 2 writers:", json.dumps(ceiling_all))
            if "storms" in phases:
                count = 2_000 if quick else 10_000
                for label, opts in (("16 shards", options), ("1 shard", one)):
                    rates = await bench.connect_rates(count, opts, label.split()[0])
                    print(f"connect/reconnect storm, one node, {label}:", json.dumps(rates))
            if "sweeps" in phases:
                for count in (2_000,) if quick else (10_000, 50_000):
                    print("sweep:", json.dumps(await bench.sweep(count)))
            if "room" in phases:
                print("room query:", json.dumps(await bench.room_query(5_000 if quick else 100_000)))
            if "writes" in phases and "ceiling" in phases:
                for shards in (1, options.shards):
                    load = projection(ceiling_one["rate"], writes["reconnect_1_room"], shards)
                    print(f"projection, {shards} shard(s):", json.dumps(load))
        finally:
            cluster.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.registry_bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="smaller counts and shorter phases")
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help=f"comma-separated phases to run (default: all of {','.join(PHASES)})",
    )
    parser.add_argument("--worker", nargs=3, metavar=("URL", "BUCKETS", "SECONDS"), help=argparse.SUPPRESS)
    parser.add_argument("--victim", nargs=3, metavar=("URLS", "COUNT", "NODE_ID"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.victim:
        urls, count, node_id = args.victim
        asyncio.run(be_a_victim(urls, int(count), node_id))
        return 0
    if args.worker:
        url, buckets, seconds = args.worker
        result = asyncio.run(raw_put_rate(url, buckets.split(","), float(seconds), window=1000))
        print(json.dumps(result))
        return 0
    phases = tuple(p for p in args.phases.split(",") if p)
    unknown = sorted(set(phases) - set(PHASES))
    if unknown:
        parser.error(f"unknown phase(s) {', '.join(unknown)}; choose from {', '.join(PHASES)}")
    asyncio.run(run(args.quick, phases))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
