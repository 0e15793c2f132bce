"""``prism dev``: NATS with JetStream, N gateway nodes and the notification service on this machine, in one
command.

Every part is a child process started here and stopped here: Ctrl-C or SIGTERM stops the nodes (they
drain), then NATS; children also die with this process if it is killed outright.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import urllib.error
import urllib.request

from gateway.embedded_nats import NatsServer, die_with_parent

log = logging.getLogger("prism.dev")

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
_SAMPLE_NOTIFICATION = '{"id":"n1","payload":"hello"}'


async def _wait_ready(url: str, proc: asyncio.subprocess.Process, deadline: float) -> None:
    loop = asyncio.get_running_loop()
    while True:
        if proc.returncode is not None:
            raise RuntimeError(f"{url} exited with code {proc.returncode} before it was ready")
        try:
            status = await asyncio.to_thread(_http_status, url)
        except OSError:
            status = 0
        if status == 200:
            return
        if loop.time() > deadline:
            raise TimeoutError(f"{url} not ready within {READY_TIMEOUT}s")
        await asyncio.sleep(0.1)  # polling another process's HTTP endpoint: there is no event to await


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


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


async def _start_notify(host: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    """One notification service instance; its metrics port is any free one unless PRISM_METRICS_PORT says."""
    port = [] if "PRISM_METRICS_PORT" in env else ["--metrics-port", "0"]
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "notify", "--metrics-host", host, *port,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,  # one line, "prism notify ready: ... metrics on <url>"
        preexec_fn=die_with_parent,
        start_new_session=True,
    )  # fmt: skip


async def _notify_ready(proc: asyncio.subprocess.Process, deadline: float) -> str:
    """Wait for the service's ready line; return its metrics URL."""
    assert proc.stdout is not None
    left = deadline - asyncio.get_running_loop().time()
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), max(0.1, left))).decode()
    except TimeoutError:
        raise TimeoutError(f"the notification service was not ready within {READY_TIMEOUT}s") from None
    if "ready" not in line:
        raise RuntimeError(f"the notification service exited with code {await proc.wait()} while starting")
    return line.rsplit(" ", 1)[-1].strip()


async def run_dev(nodes: int, port: int, host: str) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    nats: NatsServer | None = None
    nats_url = os.environ.get("PRISM_NATS_URL")
    if not nats_url:
        nats = await asyncio.to_thread(NatsServer.start, name="prism-dev")
        nats_url = nats.url
    env = {
        **os.environ,
        "PRISM_NATS_URL": nats_url,
        "PRISM_DRAIN_SECONDS": os.environ.get("PRISM_DRAIN_SECONDS", "1"),
    }
    procs: list[asyncio.subprocess.Process] = []
    try:
        for i in range(nodes):
            node_port = port + i
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gateway",
                "gateway",
                "--host",
                host,
                "--port",
                str(node_port),
                "--node-id",
                f"node{i + 1}",
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                preexec_fn=die_with_parent,
                start_new_session=True,  # Ctrl-C reaches only us; we forward one SIGTERM
            )
            procs.append(proc)
        notify = await _start_notify(host, env)
        deadline = loop.time() + READY_TIMEOUT
        shown_host = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::") else host
        ready = [
            _wait_ready(f"http://{shown_host}:{port + i}/readyz", p, deadline) for i, p in enumerate(procs)
        ]
        procs.append(notify)
        _, notify_url = await asyncio.gather(asyncio.gather(*ready), _notify_ready(notify, deadline))
        lines = ["", "Prism dev is running. Press Ctrl-C to stop.", f"  NATS      {nats_url}"]
        for i in range(nodes):
            base = f"{shown_host}:{port + i}"
            lines.append(f"  node{i + 1}     ws://{base}/ws   http://{base}/healthz  /readyz  /metrics")
        lines.append(f"  notify    {notify_url}  /healthz  /readyz")
        lines.append(f"  try       python -m shared.client ws://{shown_host}:{port}/ws?user=alice")
        lines.append(f"            nats pub -s {nats_url} notify.user.alice '{_SAMPLE_NOTIFICATION}'")
        print("\n".join(lines) + "\n", flush=True)
        exited = [asyncio.ensure_future(p.wait()) for p in procs]
        stopper = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait([stopper, *exited], return_when=asyncio.FIRST_COMPLETED)
        if stopper not in done:
            log.error("a gateway node or the notification service exited unexpectedly; stopping everything")
        stopper.cancel()
        for task in exited:
            task.cancel()
        return 0 if stopper in done else 1
    finally:
        await _stop_all(procs)
        if nats is not None:
            await asyncio.to_thread(nats.stop)
        print("prism dev stopped", flush=True)
