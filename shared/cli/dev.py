"""``prism dev``: NATS with JetStream, N gateway nodes, the notification service and the demo backend
(shared/demo_backend.py, unless ``--no-demo-backend``) on this machine, in one command. With
``--http-backend`` also the example HTTP backend (shared/http_demo.py) on port + 200, named in a routes
file for every node, and each node's HTTP API on its port + 100 with a fresh API key.

Every part is a child process started here and stopped here: Ctrl-C or SIGTERM stops the nodes (they
drain), then NATS; children also die with this process if it is killed outright. A gateway node that exits
unexpectedly is restarted on its port with its node id (so a browser can watch its client reconnect), and
the banner and each restart print the node's PID.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import importlib.util
import logging
import math
import os
import secrets
import shutil
import signal
import sys
import tempfile
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from gateway.embedded_nats import NatsServer, die_with_parent
from shared import http_demo
from shared.cli.common import UnknownVariables, add_log_format, run_on_uvloop, setup_telemetry
from shared.cli.environment import without_unknown
from shared.config import load
from shared.errors import ConfigError, PrismError
from shared.listen import Settings, check_can_listen
from shared.nats_auth import NatsSettings
from shared.nats_connection import NatsOptions, NatsUnreachable, connect

log = logging.getLogger("prism.dev")

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
# A gateway node that dies is started again (same port, same node id), unless it crash-loops:
RESTART_LIMIT = 5  # restarts allowed within RESTART_WINDOW seconds; one more stops everything
RESTART_WINDOW = 60.0
_DEV_LISTEN = Settings(host="--host", port="--port")
_SAMPLE_NOTIFICATION = '{"id":"n1","payload":"hello"}'
API_PORT_OFFSET = 100  # --http-backend: node i's HTTP API is on its port + 100
HTTP_DEMO_PORT_OFFSET = 200  # and the example HTTP backend on the first node's port + 200


class StartFailed(PrismError):
    """Something ``prism dev`` started did not come up; the message says what, in one line."""


def check_arguments(nodes: int, port: int, ready_timeout: float) -> None:
    """Refuse ``--nodes`` and ``--port`` values that cannot give ``nodes`` ports from ``port`` up, and a
    ``--ready-timeout`` that is not a positive number of seconds."""
    if not 0 < ready_timeout < math.inf:
        raise ConfigError(f"--ready-timeout must be a positive number of seconds, got {ready_timeout}")
    if nodes < 1:
        raise ConfigError(f"--nodes must be at least 1, got {nodes}")
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port must be a port number from 1 to 65535, got {port}")
    if port + nodes - 1 > 65535:
        raise ConfigError(f"--nodes {nodes} from --port {port} would need ports above 65535")


async def _wait_ready(name: str, url: str, proc: asyncio.subprocess.Process, deadline: float) -> None:
    """Wait until ``proc`` itself answers ``url`` (its ``/readyz``) with 200. Another process that holds
    the port (a second ``prism dev``, an old node) answers with its own ``Prism-Pid``: not ready."""
    loop = asyncio.get_running_loop()
    timeout = deadline - loop.time()
    while True:
        if proc.returncode is not None:
            raise StartFailed(f"{name} exited with code {proc.returncode} before it was ready")
        status, pid = await asyncio.to_thread(readyz, url)
        if status == 200 and pid == str(proc.pid):
            return
        if loop.time() > deadline:
            raise StartFailed(f"{name} was not ready within {timeout:.0f}s ({url})")
        await asyncio.sleep(0.1)  # polling another process's HTTP endpoint: there is no event to await


def readyz(url: str) -> tuple[int, str | None]:
    """The status of a GET of a node's ``/readyz`` and the ``Prism-Pid`` of the process that answered it;
    ``(0, None)`` when nothing answers it with HTTP, as in :func:`http_status`."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status), response.headers.get("Prism-Pid")
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.headers.get("Prism-Pid")
    except (OSError, http.client.HTTPException):
        return 0, None


def http_status(url: str) -> int:
    """The HTTP status of a GET of ``url``; 0 when nothing answers it with HTTP (not listening yet).

    While nothing listens on a port in the ephemeral range, Linux may even connect the probe to itself
    (TCP simultaneous open) and read our own request back as a bad status line: also "not yet"."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, http.client.HTTPException):
        return 0


async def _stop_all(procs: list[asyncio.subprocess.Process]) -> None:
    for proc in procs:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), STOP_TIMEOUT)
    except TimeoutError:
        for proc in procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        await asyncio.gather(*(p.wait() for p in procs))


async def _spawn(*args: str, env: dict[str, str], ready_line: bool) -> asyncio.subprocess.Process:
    """Start ``prism <args>`` as a child that dies with this process and that Ctrl-C does not reach (we
    forward one SIGTERM); with ``ready_line`` its stdout is a pipe for the one line that says it is ready."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.cli", *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE if ready_line else None,
        preexec_fn=die_with_parent,
        start_new_session=True,
    )  # fmt: skip


async def _start_notify(host: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    """One notification service instance; its metrics port is any free one unless PRISM_METRICS_PORT says.
    Its ready line is "prism notify ready: ... metrics on <url>"."""
    port = [] if "PRISM_METRICS_PORT" in env else ["--metrics-port", "0"]
    return await _spawn("notify", "--metrics-host", host, *port, env=env, ready_line=True)


async def _notify_ready(proc: asyncio.subprocess.Process, deadline: float) -> str:
    """Wait for the service's ready line; return its metrics URL."""
    line = await _ready_line(proc, "the notification service", deadline)
    return line.rsplit(" ", 1)[-1].strip()


async def _start_demo(env: dict[str, str]) -> asyncio.subprocess.Process:
    """The demo backend, so that the echo and chat requests the docs and load tests send are answered."""
    return await _spawn("demo-backend", env=env, ready_line=True)


async def _ready_line(proc: asyncio.subprocess.Process, what: str, deadline: float) -> str:
    """Wait for the first line ``proc`` prints, which says it is ready; return it."""
    assert proc.stdout is not None
    left = deadline - asyncio.get_running_loop().time()
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), max(0.1, left))).decode()
    except TimeoutError:
        raise StartFailed(f"{what} was not ready within {left:.0f}s") from None
    if "ready" not in line:
        raise StartFailed(f"{what} exited with code {await proc.wait()} while starting")
    return line


async def _reach_nats(timeout: float) -> None:
    """Connect once to the NATS the user named (``PRISM_NATS_URL``, with the ``PRISM_NATS_*`` credentials
    the children will use) before starting anything on it: while it is not there, one line per attempt
    comes from here rather than from every child, and after ``timeout`` seconds one line says so."""
    settings = load(NatsSettings)
    settings.nats_auth.validate()
    options = NatsOptions(servers=settings.nats_servers, name="prism-dev", auth=settings.nats_auth)
    try:
        connection = await connect(options, give_up_after=timeout)
    except NatsUnreachable as exc:
        raise StartFailed(f"{exc}; gave up after {timeout:.0f}s: check PRISM_NATS_URL") from None
    await connection.close()


def dev_environment(nats_url: str, node_urls: list[str]) -> dict[str, str]:
    """The environment of every child: the console on, every room with presence events and the
    notification service answering the console's "notify me" requests (what a developer wants to try),
    unless the caller's environment says otherwise."""
    defaults = {
        "PRISM_CONSOLE": "true",
        "PRISM_CONSOLE_NOTIFY": "true",
        "PRISM_NOTIFY_CLIENT_REQUESTS": "true",
        "PRISM_CONSOLE_NODES": ",".join(node_urls),
        "PRISM_ROOM_PRESENCE": "*",
    }
    return {
        **defaults,
        **without_unknown(os.environ),  # prism dev has warned about the rest (shared/cli/command.py)
        "PRISM_NATS_URL": nats_url,
        "PRISM_DRAIN_SECONDS": os.environ.get("PRISM_DRAIN_SECONDS", "1"),
    }


@dataclass
class DevNode:
    """One gateway child of ``prism dev``, restarted (same port and node id) when it dies."""

    name: str
    host: str
    port: int
    env: dict[str, str]
    ready_timeout: float = READY_TIMEOUT
    api_port: int = 0  # the node's HTTP API, 0: off
    proc: asyncio.subprocess.Process | None = None
    restarts: deque[float] = field(default_factory=deque)  # loop times of recent restarts

    async def start(self) -> asyncio.subprocess.Process:
        self.proc = await _spawn(
            "gateway", "--host", self.host, "--port", str(self.port), "--node-id", self.name,
            "--metrics-port", "0",  # /metrics on the node's port; PRISM_METRICS_PORT is notify's here
            *(["--api-port", str(self.api_port)] if self.api_port else []),
            env=self.env, ready_line=False,  # readiness is its /readyz
        )  # fmt: skip
        return self.proc

    def may_restart(self, now: float) -> bool:
        """Whether one more restart stays within RESTART_LIMIT per RESTART_WINDOW (a crash loop does not)."""
        while self.restarts and now - self.restarts[0] > RESTART_WINDOW:
            self.restarts.popleft()
        return len(self.restarts) < RESTART_LIMIT


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


async def _unless_stopped(work: Awaitable[None], stop: asyncio.Event) -> bool:
    """Await ``work``; ``False`` (and ``work`` cancelled) if ``stop`` is set first. Raises what it raises."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return False
    task.result()
    return True


async def _restart(node: DevNode, shown_host: str, stop: asyncio.Event) -> bool:
    """Start ``node`` again after it exited; ``False`` once it crashed too often (or stop was asked)."""
    assert node.proc is not None
    loop = asyncio.get_running_loop()
    code = node.proc.returncode
    if not node.may_restart(loop.time()):
        log.error(
            "%s exited (code %s) %d times within %.0fs; stopping everything",
            node.name, code, RESTART_LIMIT + 1, RESTART_WINDOW,
        )  # fmt: skip
        return False
    node.restarts.append(loop.time())
    log.warning("%s exited unexpectedly (code %s); restarting it", node.name, code)
    proc = await node.start()
    print(f"  {node.name:<9} restarted (exit code {code})   pid {proc.pid}", flush=True)
    url = f"http://{shown_host}:{node.port}/readyz"
    try:
        deadline = loop.time() + node.ready_timeout
        ready = await _unless_stopped(_wait_ready(node.name, url, proc, deadline), stop)
    except StartFailed as exc:
        log.error("%s did not come back: %s", node.name, exc)
        return True  # the main loop sees it exit (or stops it) and counts the next restart
    if not ready:
        return False
    print(f"  {node.name:<9} ready again  ws://{shown_host}:{node.port}/ws   pid {proc.pid}", flush=True)
    return True


@dataclass
class HttpBackendSetup:
    """What ``--http-backend`` adds: the example backend's port, a signing secret, an API key, and the
    routes file naming the backend (in a temporary directory, removed at the end)."""

    port: int
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    api_key: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    directory: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="prism-dev-http-"))

    def write_routes(self, host: str) -> str:
        path = os.path.join(self.directory, "http-backends.toml")
        with open(path, "w") as file:
            file.write(http_demo.routes_file(f"http://{host}:{self.port}"))
        return path

    def node_env(self, host: str) -> dict[str, str]:
        return {
            "PRISM_HTTP_BACKENDS_FILE": self.write_routes(host),
            "PRISM_HTTP_DEMO_SECRET": self.secret,
            "PRISM_API_KEYS": self.api_key,
        }

    async def start(self, host: str, api_url: str, env: dict[str, str]) -> asyncio.subprocess.Process:
        demo_env = env | {
            "PRISM_HTTP_DEMO_SECRET": self.secret,
            "PRISM_HTTP_DEMO_API_URL": api_url,
            "PRISM_HTTP_DEMO_API_KEY": self.api_key,
        }
        return await _spawn(
            "http-demo", "--http-demo-host", host, "--http-demo-port", str(self.port),
            env=demo_env, ready_line=True,
        )  # fmt: skip

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", type=int, default=2, help="gateway nodes to start (default 2)")
    parser.add_argument("--port", type=int, default=8080, help="port of the first node (default 8080)")
    parser.add_argument("--host", default="127.0.0.1", help="address the nodes listen on (default 127.0.0.1)")
    parser.add_argument(
        "--no-demo-backend",
        dest="demo_backend",
        action="store_false",
        help="do not run the demo backend (echo, chat.send, chat.history): your own backend answers them",
    )
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=READY_TIMEOUT,
        metavar="S",
        help="seconds to wait for NATS (PRISM_NATS_URL), then for each process, to be ready (default 30)",
    )
    parser.add_argument(
        "--http-backend",
        dest="http_backend",
        action="store_true",
        help="also run the example HTTP backend (http.* events, connects, disconnects; needs the http-demo "
        "extra) and each node's HTTP API on port + 100",
    )
    add_log_format(parser)


def run(args: argparse.Namespace, unknown: UnknownVariables) -> int:
    setup_telemetry(args, "info", None)
    unknown.log()  # only here: prism dev leaves these variables out of its processes' environment
    dev = run_dev(
        args.nodes,
        args.port,
        args.host,
        args.ready_timeout,
        args.demo_backend,
        http_backend=args.http_backend,
    )
    try:
        return run_on_uvloop(dev)
    except StartFailed as exc:
        print(f"prism dev: {exc}", file=sys.stderr)
        return 1


async def run_dev(
    nodes: int,
    port: int,
    host: str,
    ready_timeout: float = READY_TIMEOUT,
    demo_backend: bool = True,
    http_backend: bool = False,
) -> int:
    """Start everything, print the banner, supervise until stopped. Raises :class:`ConfigError` (bad
    layout, a port in use: before anything starts) or :class:`StartFailed`."""
    check_arguments(nodes, port, ready_timeout)
    if http_backend and importlib.util.find_spec("uvicorn") is None:
        raise ConfigError("--http-backend needs the http-demo extra: pip install -e '.[http-demo]'")
    for node_port in range(port, port + nodes):  # a taken port: one line now, not N failed nodes later
        await check_can_listen(host, node_port, _DEV_LISTEN)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    nats: NatsServer | None = None
    nats_url = os.environ.get("PRISM_NATS_URL")
    if nats_url and not await _unless_stopped(_reach_nats(ready_timeout), stop):
        print("prism dev stopped", flush=True)
        return 0
    if not nats_url:
        nats = await asyncio.to_thread(NatsServer.start, name="prism-dev")
        nats_url = nats.url
    shown_host = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::") else host
    env = dev_environment(nats_url, [f"ws://{shown_host}:{port + i}/ws" for i in range(nodes)])
    http = HttpBackendSetup(port + HTTP_DEMO_PORT_OFFSET) if http_backend else None
    if http is not None:
        env |= http.node_env(host)
    api_offset = API_PORT_OFFSET if http is not None else None
    gateways = [
        DevNode(
            f"node{i + 1}", host, port + i, env, ready_timeout, port + i + api_offset if api_offset else 0
        )
        for i in range(nodes)
    ]
    notify: asyncio.subprocess.Process | None = None
    demo: asyncio.subprocess.Process | None = None
    http_proc: asyncio.subprocess.Process | None = None

    def children() -> list[asyncio.subprocess.Process]:
        procs = [g.proc for g in gateways if g.proc is not None]
        return procs + [p for p in (notify, demo, http_proc) if p is not None]

    try:
        for gateway in gateways:
            await gateway.start()
        notify = await _start_notify(host, env)
        demo = await _start_demo(env) if demo_backend else None
        if http is not None:
            http_proc = await http.start(host, f"http://{shown_host}:{gateways[0].api_port}", env)
        deadline = loop.time() + ready_timeout
        ready: list[Awaitable[object]] = []
        for g in gateways:
            assert g.proc is not None
            ready.append(_wait_ready(g.name, f"http://{shown_host}:{g.port}/readyz", g.proc, deadline))
        if demo is not None:
            ready.append(_ready_line(demo, "the demo backend", deadline))
        if http_proc is not None:
            ready.append(_ready_line(http_proc, "the example HTTP backend", deadline))
        _, notify_url = await asyncio.gather(asyncio.gather(*ready), _notify_ready(notify, deadline))
        lines = ["", "Prism dev is running. Press Ctrl-C to stop.", f"  NATS      {nats_url}"]
        for g in gateways:
            assert g.proc is not None
            base = f"{shown_host}:{g.port}"
            urls = f"ws://{base}/ws   http://{base}/healthz  /readyz  /metrics"
            lines.append(f"  {g.name:<9} {urls}   pid {g.proc.pid}")
        if _truthy(env.get("PRISM_CONSOLE")):
            lines.append(f"  console   http://{shown_host}:{port}/")
        lines.append(f"  notify    {notify_url}  /healthz  /readyz   pid {notify.pid}")
        if demo is not None:
            lines.append(f"  demo      answers echo, chat.send, chat.history   pid {demo.pid}")
        if http is not None and http_proc is not None:
            apis = "  ".join(f"http://{shown_host}:{g.api_port}" for g in gateways)
            lines.append(f"  http api  {apis}   key {http.api_key}")
            lines.append(
                f"  http demo http://{shown_host}:{http.port}  decides connects, "
                f"answers http.echo and http.shout   pid {http_proc.pid}"
            )
        lines.append(f"  try       python -m shared.client ws://{shown_host}:{port}/ws?user=alice")
        lines.append(f"            nats pub -s {nats_url} notify.user.alice '{_SAMPLE_NOTIFICATION}'")
        if http is not None:
            lines.append(
                f"            curl -H 'Authorization: Bearer {http.api_key}' -d hi "
                f"http://{shown_host}:{gateways[0].api_port}/v1/users/alice/messages"
            )
        print("\n".join(lines) + "\n", flush=True)
        return await _supervise(gateways, notify, shown_host, stop, demo, http_proc)
    finally:
        await _stop_all(children())
        if nats is not None:
            await asyncio.to_thread(nats.stop)
        if http is not None:
            http.remove()
        print("prism dev stopped", flush=True)


async def _supervise(
    gateways: list[DevNode],
    notify: asyncio.subprocess.Process,
    shown_host: str,
    stop: asyncio.Event,
    demo: asyncio.subprocess.Process | None = None,
    http_demo_proc: asyncio.subprocess.Process | None = None,
) -> int:
    """Run until stopped (0); restart gateway nodes that die; stop everything (1) if the notification
    service or the demo backend dies or a node keeps crashing."""
    services = {notify: "the notification service"} | ({demo: "the demo backend"} if demo else {})
    if http_demo_proc is not None:
        services[http_demo_proc] = "the example HTTP backend"
    while True:
        waits: dict[asyncio.Future[Any], DevNode | str] = {}
        for g in gateways:
            assert g.proc is not None
            waits[asyncio.ensure_future(g.proc.wait())] = g
        for proc, name in services.items():
            waits[asyncio.ensure_future(proc.wait())] = name
        stopper: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        try:
            done, _ = await asyncio.wait([stopper, *waits], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in [stopper, *waits]:
                future.cancel()
        if stopper in done:
            return 0
        for future in done:
            node = waits[future]
            if isinstance(node, str):
                log.error("%s exited unexpectedly; stopping everything", node)
                return 1
            if not await _restart(node, shown_host, stop):
                return 0 if stop.is_set() else 1
