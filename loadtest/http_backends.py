"""The cost of an HTTP backend next to a NATS backend, side by side in one run.

One gateway process alone on core 0; NATS, both echo backends and the clients on core 1. The same
clients send the same requests (``{"event":..,"data":{"t":..},"ref":..}``) through the same gateway to

- ``nats``: ``bench.echo``, answered by a nats-py subscriber process (``msg.respond(msg.data)``);
- ``http``: ``bench.http.echo``, routed by the routes file to an ASGI echo process (uvicorn with
  httptools, no framework), signed with HMAC-SHA256 as in production; it answers the event's ``data``.

Each mode runs twice, alternating (nats, http, nats, http), so a drift of the machine hits both. Per
run: a **peak** phase (``--clients`` connections with ``--inflight`` requests each, as fast as answers
come) gives requests/s and the gateway's and the backend's CPU per request; a **paced** phase
(``--rate`` requests/s, open loop) gives the latency percentiles at the same load for both.

    python -m loadtest.http_backends [--seconds 8] [--clients 50] [--inflight 4] [--rate 500] [--out F]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from loadtest.procstat import cpu_seconds, machine_cores
from loadtest.stats import summarize
from loadtest.targets.base import ServerProcess, free_port, python, wait_for_port
from loadtest.targets.prism import PrismTarget

SECRET = "bench-signing-secret-" + "s" * 24
MODES = {"nats": "bench.echo", "http": "bench.http.echo"}


# -- the backends, each in a process of its own ------------------------------------------------------
def echo_app() -> Any:
    """A plain ASGI app that answers each event's ``data`` (what an HTTP backend must at least do)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        answer = orjson.dumps(orjson.loads(body)["data"])
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    return app


def serve_http(port: int) -> None:
    import uvicorn

    uvicorn.run(
        echo_app(), host="127.0.0.1", port=port, log_level="warning", access_log=False, http="httptools"
    )


async def serve_nats(url: str) -> None:
    import nats

    from shared.nats_connection import flush_all

    nc = await nats.connect(url)

    async def echo(msg: Any) -> None:
        await msg.respond(msg.data)

    await nc.subscribe("client.event.bench.echo", queue="bench", cb=echo)
    await flush_all(nc)
    print("ready", flush=True)
    await asyncio.Event().wait()


# -- the clients ------------------------------------------------------------------------------------
@dataclass
class Run:
    mode: str
    round: int
    requests_per_s: float
    gateway_cpu_us: float  # gateway CPU per request, microseconds
    backend_cpu_us: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    errors: int


class Clients:
    def __init__(self, url: str, count: int) -> None:
        self.url = url
        self.count = count
        self.links: list[Any] = []
        self.pending: dict[int, asyncio.Future[None]] = {}
        self.refs = itertools.count(1)
        self.errors = 0
        self._readers: list[asyncio.Task[None]] = []

    async def open(self) -> None:
        from websockets.asyncio.client import connect

        for _ in range(self.count):
            ws = await connect(self.url, max_queue=None, ping_interval=None)
            await ws.recv()  # the welcome
            self.links.append(ws)
            self._readers.append(asyncio.ensure_future(self._read(ws)))

    async def _read(self, ws: Any) -> None:
        async for frame in ws:
            answer = orjson.loads(frame)
            future = self.pending.pop(answer.get("ref"), None)
            if answer.get("prism") == "error":
                self.errors += 1
            if future is not None and not future.done():
                future.set_result(None)

    async def request(self, index: int, event: str) -> int:
        """One request on connection ``index``; its round trip in nanoseconds."""
        ref = next(self.refs)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending[ref] = future
        start = time.perf_counter_ns()
        await self.links[index].send(
            orjson.dumps({"event": event, "data": {"t": start}, "ref": ref}).decode()
        )
        await future
        return time.perf_counter_ns() - start

    async def close(self) -> None:
        for task in self._readers:
            task.cancel()
        for ws in self.links:
            await ws.close()


async def peak(clients: Clients, event: str, inflight: int, seconds: float) -> int:
    done = 0
    deadline = time.monotonic() + seconds

    async def worker(index: int) -> None:
        nonlocal done
        while time.monotonic() < deadline:
            await clients.request(index, event)
            done += 1

    await asyncio.gather(*(worker(i % clients.count) for i in range(clients.count * inflight)))
    return done


async def paced(clients: Clients, event: str, rate: float, seconds: float) -> list[int]:
    latencies: list[int] = []
    tasks: list[asyncio.Task[None]] = []
    start = time.monotonic()

    async def one(index: int) -> None:
        latencies.append(await clients.request(index, event))

    for n in range(int(rate * seconds)):
        wait = start + n / rate - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.ensure_future(one(n % clients.count)))
    await asyncio.gather(*tasks)
    return latencies


async def measure(args: argparse.Namespace) -> list[Run]:
    workdir = Path(tempfile.mkdtemp(prefix="prism-http-bench-"))
    http_port = free_port()
    routes = workdir / "routes.toml"
    routes.write_text(
        "[[backend]]\n"
        'name = "bench"\n'
        f'event_url = "http://127.0.0.1:{http_port}/event"\n'
        'events = ["bench.http.>"]\n'
        'secret_env = "BENCH_HTTP_SECRET"\n'
        f"max_concurrency = {args.clients * args.inflight}\n"
    )
    env = {"PRISM_HTTP_BACKENDS_FILE": str(routes), "BENCH_HTTP_SECRET": SECRET, "PRISM_MESSAGE_RATE": "0"}
    target = PrismTarget(core=0, nats_core=1, env=env)
    await target.start(workdir)
    side = 1 if 1 in machine_cores() else None
    http = ServerProcess([python(), "-m", "loadtest.http_backends", "serve-http", str(http_port)], side, {})
    await http.start(workdir / "http-echo.log")
    await wait_for_port(http_port, http)
    assert target.nats is not None
    natsecho = ServerProcess(
        [python(), "-m", "loadtest.http_backends", "serve-nats", target.nats.url], side, {}
    )
    await natsecho.start(workdir / "nats-echo.log")
    backend_pid = {"http": http.pid, "nats": natsecho.pid}
    clients = Clients(target.url(), args.clients)
    runs: list[Run] = []
    try:
        await clients.open()
        for event in MODES.values():  # warm up, and wait for the NATS echo to subscribe
            deadline = time.monotonic() + 20
            while True:
                errors = clients.errors
                await asyncio.wait_for(clients.request(0, event), 10)
                if clients.errors == errors:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no answer to {event} without an error")
                await asyncio.sleep(0.1)
        clients.errors = 0
        for round_ in (1, 2):
            for mode, event in MODES.items():
                errors = clients.errors
                gateway0, backend0 = cpu_seconds(target.server_pid), cpu_seconds(backend_pid[mode])
                started = time.monotonic()
                count = await peak(clients, event, args.inflight, args.seconds)
                elapsed = time.monotonic() - started
                gateway_cpu = cpu_seconds(target.server_pid) - gateway0
                backend_cpu = cpu_seconds(backend_pid[mode]) - backend0
                latency = summarize(await paced(clients, event, args.rate, args.seconds))
                assert latency is not None
                runs.append(
                    Run(
                        mode,
                        round_,
                        round(count / elapsed, 1),
                        round(gateway_cpu / count * 1e6, 1),
                        round(backend_cpu / count * 1e6, 1),
                        round(latency.p50, 3),
                        round(latency.p90, 3),
                        round(latency.p99, 3),
                        round(latency.p999, 3),
                        clients.errors - errors,
                    )
                )
                print(json.dumps(asdict(runs[-1])), flush=True)
    finally:
        await clients.close()
        await natsecho.stop()
        await http.stop()
        await target.stop()
    return runs


def table(runs: list[Run]) -> str:
    """The runs as a Markdown table (what docs/benchmarks.md shows)."""
    head = ["mode", "round", "requests/s (peak)", "gateway CPU us/request", "backend CPU us/request"]
    head += ["p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "errors"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in runs:
        cells = [
            r.mode,
            str(r.round),
            f"{r.requests_per_s:,.0f}",
            f"{r.gateway_cpu_us:g}",
            f"{r.backend_cpu_us:g}",
        ]
        cells += [f"{r.p50_ms:g}", f"{r.p90_ms:g}", f"{r.p99_ms:g}", f"{r.p999_ms:g}", str(r.errors)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine() -> dict[str, str]:
    from importlib.metadata import version

    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    versions = {
        name: version(name) for name in ("aiohttp", "websockets", "nats-py", "uvicorn", "httptools", "uvloop")
    }
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "kernel": platform.release(),
        "python": platform.python_version(),
        **versions,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve-http"]:
        serve_http(int(argv[1]))
        return 0
    if argv[:1] == ["serve-nats"]:
        asyncio.run(serve_nats(argv[1]))
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.http_backends", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds of each phase (default 8)")
    parser.add_argument("--clients", type=int, default=50, help="WebSocket connections (default 50)")
    parser.add_argument("--inflight", type=int, default=4, help="requests in flight per connection at peak")
    parser.add_argument(
        "--rate", type=float, default=500.0, help="requests/s of the paced phase (default 500)"
    )
    parser.add_argument("--out", help="write the runs and the machine as JSON here")
    args = parser.parse_args(argv)
    import uvloop

    runs = uvloop.run(measure(args))
    print("\n" + table(runs))
    info = machine()
    print("\n" + ", ".join(f"{k} {v}" for k, v in info.items()))
    if args.out:
        Path(args.out).write_text(
            json.dumps({"machine": info, "args": vars(args), "runs": [asdict(r) for r in runs]}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
