"""Helpers for the browser tests: ``prism dev`` as a child process, the Chromium launch settings, a JS
harness around the SDK, and screenshots kept as test artifacts."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.cli.dev import http_status
from tests.helpers import alive, descendants, dev_env, eventually, free_port_pair

if TYPE_CHECKING:  # playwright may be missing: the tests are skipped then, but this module is imported
    from playwright.async_api import Page

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("PRISM_CHROMIUM", "/usr/bin/chromium"))
# This machine's network refuses Chromium's background connections (updates, sync, QUIC probes): turn
# them off, so nothing waits on them and nothing is downloaded.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Screenshots and logs CI keeps: test-artifacts/browser/ (git-ignored), or $PRISM_TEST_ARTIFACTS/browser.
ARTIFACTS = Path(os.environ.get("PRISM_TEST_ARTIFACTS", REPO / "test-artifacts")) / "browser"

_PID_LINE = re.compile(r"^\s+(node\d+)\s.*\bpid (\d+)\s*$")


def missing_requirement() -> str | None:
    """Why the browser tests cannot run here, or ``None``."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium; .ci/run does)"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    return None


@dataclass
class PrismDev:
    """``python -m shared.cli dev --nodes N`` as a child process, its output read by a thread.

    ``node_pids`` always holds the latest PID of each node: the banner's, then each restart line's.
    """

    nodes: int
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    lines: list[str] = field(default_factory=list)
    nats_url: str = ""
    node_pids: dict[str, int] = field(default_factory=dict)
    known_pids: set[int] = field(default_factory=set)  # every process it ever started, for the cleanup
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _reader: threading.Thread | None = None

    @property
    def http_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{self.port + i}" for i in range(self.nodes)]

    @property
    def ws_urls(self) -> list[str]:
        return [f"ws://127.0.0.1:{self.port + i}/ws" for i in range(self.nodes)]

    def start(self, timeout: float = 60.0) -> PrismDev:
        env = dev_env(PRISM_DRAIN_SECONDS="0.5", PRISM_PRESENCE_DEBOUNCE="1", PRISM_PRESENCE_STORAGE="memory")
        args = [sys.executable, "-m", "shared.cli", "dev", "--nodes", str(self.nodes)]
        args += ["--port", str(self.port)]
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=REPO,
        )
        self._reader = threading.Thread(target=self._read, name="prism-dev-output", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while not any(line.lstrip().startswith("try ") for line in self.snapshot()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prism dev did not start: {''.join(self.snapshot())[-3000:]}")
            time.sleep(0.05)  # a plain thread-fed list: there is no event to await in sync code
        banner = self.snapshot()
        self.nats_url = next(w for line in banner for w in line.split() if w.startswith("nats://"))
        self.known_pids |= descendants(self.proc.pid)
        return self

    def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        with self.log.open("w") as out:
            for raw in self.proc.stdout:
                line = raw.decode(errors="replace")
                out.write(line)
                out.flush()
                with self._lock:
                    self.lines.append(line)
                    if (match := _PID_LINE.match(line)) is not None:
                        self.node_pids[match[1]] = int(match[2])
                        self.known_pids.add(int(match[2]))

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self.lines)

    async def wait_for_line(self, pattern: str, after: int = 0, timeout: float = 30.0) -> str:
        """The first output line after line ``after`` that matches the regex ``pattern``."""
        regex = re.compile(pattern)

        def found() -> str | None:
            return next((line for line in self.snapshot()[after:] if regex.search(line)), None)

        line: str = await eventually(found, timeout, what=f"prism dev to print {pattern!r}")
        return line

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Every node answers /readyz with 200 (after a restart, for example)."""

        async def all_ready() -> bool:
            statuses = await asyncio.gather(
                *(asyncio.to_thread(http_status, f"{u}/readyz") for u in self.http_urls)
            )
            return all(s == 200 for s in statuses)

        await eventually(all_ready, timeout, what="every prism dev node to be ready")

    def stop(self, timeout: float = 30.0) -> None:
        """Ctrl-C, as a user would; then SIGKILL by PID whatever is left of everything it started."""
        if self.proc is None:
            return
        self.known_pids |= descendants(self.proc.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in self.known_pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if self._reader is not None:
            self._reader.join(timeout)  # reads to EOF: every writer of the pipe is gone now
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start_prism_dev(nodes: int = 2) -> PrismDev:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return PrismDev(nodes, free_port_pair(), ARTIFACTS / "prism-dev.log").start()


# The SDK harness: window.sdk is the module; T.make() builds a client whose events are all recorded in
# T.log[name] (binary deliveries as {binary: [bytes]}), so a test can wait for them with wait_for_function.
HARNESS = """
async () => {
  const sdk = await import("/prism.js");
  const plain = (v) =>
    v instanceof ArrayBuffer ? { binary: Array.from(new Uint8Array(v)) }
    : v instanceof Error ? { name: v.name, code: v.code, message: v.message }
    : v;
  window.sdk = sdk;
  window.T = {
    clients: {},
    log: {},
    plain,
    make(name, urls, options = {}) {
      const client = new sdk.PrismClient(urls, options);
      const log = { state: [], welcome: [], message: [], presence: [], error: [], close: [], recovery: [] };
      for (const type of Object.keys(log)) client.on(type, (v) => log[type].push(plain(v)));
      this.clients[name] = client;
      this.log[name] = log;
      return client;
    },
    async settle(promise) {
      try {
        return { ok: true, value: plain(await promise) };
      } catch (error) {
        return { ok: false, error: plain(error) };
      }
    },
  };
}
"""


async def load_sdk(page: Page, base_url: str) -> None:
    """Open a plain page on ``base_url``'s origin and import its /prism.js as ``window.sdk``."""
    await page.goto(f"{base_url}/healthz")
    await page.evaluate(HARNESS)


async def wait_js(page: Page, expression: str, arg: Any = None, timeout: float = 15.0) -> Any:
    """Wait until ``expression`` (a JS function of ``arg``) returns something truthy; return it."""
    handle = await page.wait_for_function(expression, arg=arg, timeout=timeout * 1000, polling=50)
    return await handle.json_value()


async def save_screenshot(page: Page, name: str) -> Path:
    """Keep a screenshot of ``page`` as a test artifact (test-artifacts/browser/<name>.png)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    print(f"screenshot saved: {path}")
    return path


def tsc_binary() -> str | None:
    """TypeScript's compiler: $PRISM_TSC, the copy .ci/run installs under .venv/tools, or one on PATH."""
    candidates = [os.environ.get("PRISM_TSC", ""), str(REPO / ".venv/tools/node_modules/.bin/tsc")]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return candidate
    return shutil.which("tsc")
