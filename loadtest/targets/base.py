"""The target interface, and starting a server process pinned to one core."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

from gateway.embedded_nats import die_with_parent
from loadtest.fleet import Dialect
from loadtest.procstat import machine_cores


class Publisher(Protocol):
    async def room(self, room: str, data: bytes) -> None: ...
    async def conn(self, conn_id: str, data: bytes) -> None: ...
    async def user(self, user: str, data: bytes) -> None: ...
    async def flush(self) -> None: ...
    async def close(self) -> None: ...


@runtime_checkable
class StampingPublisher(Protocol):
    """A publisher whose server times deliveries itself (Prism: the ``Prism-Sent-At`` header)."""

    async def conn_stamped(self, conn_id: str, data: bytes) -> None: ...


ConnSend = Callable[[int, bytes], Awaitable[None]]


@runtime_checkable
class PreparingPublisher(Protocol):
    """A publisher that can prepare the 1:1 scenario's publishes: ``conn_sender(ids, size)`` returns
    ``send(index, data)``, :meth:`Publisher.conn` to ``ids[index]`` for ``size``-byte messages."""

    def conn_sender(self, conn_ids: list[str], size: int) -> ConnSend: ...


class Target(ABC):
    """A server under test. ``server_pid`` is the process whose CPU and memory are reported."""

    name: str
    dialect: Dialect = Dialect()
    server_pid: int = 0

    @property
    def helper_pids(self) -> list[int]:
        """Processes beside the load generator that the target needs (NATS, Redis): their CPU is reported
        so a run shows when the generator's core, not the server's, was the limit."""
        return []

    @abstractmethod
    async def start(self, workdir: Path) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    @abstractmethod
    def url(self, user: str | None = None) -> str: ...

    @abstractmethod
    async def publisher(self) -> Publisher: ...

    async def latency_buckets(self, scenario: str) -> dict[float, float] | None:
        """The server's own delivery-latency histogram for ``scenario`` (cumulative counts by upper
        bound in seconds), or None when the server keeps none (every target but Prism)."""
        return None

    async def start_echo(self) -> None:  # noqa: B027 (optional hook; most targets echo by themselves)
        """Make client requests on event ``bench.echo`` answered (targets that echo by themselves: no-op)."""


class ServerProcess:
    """A child process pinned to ``core`` with ``taskset``, stopped (and killed if need be) by PID."""

    def __init__(
        self, args: list[str], core: int | None, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        self.args = args
        self.core = core
        self.env = env
        self.cwd = cwd
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, log: Path) -> None:
        args = self.args
        if self.core is not None and shutil.which("taskset") and self.core in machine_cores():
            args = ["taskset", "-c", str(self.core), *args]
        with open(log, "ab") as out:  # noqa: ASYNC230 (opening a local log file once, at start)
            self.proc = await asyncio.create_subprocess_exec(
                *args,
                stdout=out,
                stderr=out,
                stdin=asyncio.subprocess.DEVNULL,
                env={**os.environ, **(self.env or {})},
                cwd=self.cwd,
                preexec_fn=die_with_parent,
                start_new_session=True,
            )

    async def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


async def wait_for_port(port: int, proc: ServerProcess, timeout: float = 30.0) -> None:
    """Wait until something accepts TCP on ``port`` (the server has bound it)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        assert proc.proc is not None
        if proc.proc.returncode is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.proc.returncode} before listening")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"nothing listening on {port} after {timeout}s") from None
            await asyncio.sleep(0.05)  # another process is starting: nothing to await but its port
            continue
        writer.close()
        await writer.wait_closed()
        return


async def wait_for_ready(port: int, proc: ServerProcess, timeout: float = 60.0) -> None:
    """Wait until ``GET /readyz`` on ``port`` answers 200: a Prism node listens before NATS and JetStream
    are ready, and refuses upgrades (503) until they are."""
    deadline = asyncio.get_running_loop().time() + timeout
    await wait_for_port(port, proc, timeout)
    while True:
        assert proc.proc is not None
        if proc.proc.returncode is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.proc.returncode} before it was ready")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        status = await reader.readline()
        writer.close()
        await writer.wait_closed()
        if status.split(b" ")[1:2] == [b"200"]:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"port {port} not ready after {timeout}s: {status!r}")
        await asyncio.sleep(0.05)  # another process is starting: its readiness is only to be polled


def python() -> str:
    return sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
