"""What every ``prism`` subcommand does the same way: its ``--log-format`` flag, logs and traces, the
warnings about ``PRISM_*`` variables Prism does not read, and running on uvloop."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Coroutine
from typing import Any

from shared import logs

log = logging.getLogger("prism.config")


def add_log_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format",
        dest="log_format",
        default=None,
        metavar="V",
        help="log lines as text or json (env PRISM_LOG_FORMAT, default 'text'; json for production)",
    )


def setup_telemetry(args: argparse.Namespace, level: str, service_name: str | None) -> None:
    """Logs as ``--log-format`` / ``PRISM_LOG_FORMAT`` say (``text`` or ``json`` lines on stderr, see
    shared/logs.py), then traces if the ``OTEL_*`` variables ask for them (``OTEL_TRACES_EXPORTER``, see
    shared/tracing.py). ``prism dev`` (no service name) traces nothing itself: its processes inherit the
    environment, the log format included."""
    log_format = logs.check_format(args.log_format or os.environ.get("PRISM_LOG_FORMAT", "text"))
    if args.log_format:
        os.environ["PRISM_LOG_FORMAT"] = log_format  # for the processes prism dev starts
    logs.setup(level, log_format)
    if service_name is not None:
        from shared import tracing  # OpenTelemetry's SDK: only for the processes that make spans

        tracing.configure(service_name)


class UnknownVariables:
    """One line per ``PRISM_*`` variable that Prism does not read: logged once logging is set up
    (:meth:`log`), or printed if the configuration is refused first (:meth:`print`)."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def log(self) -> None:
        for line in self.lines:
            log.warning("%s", line)
        self.lines = []

    def print(self) -> None:
        for line in self.lines:
            print(f"prism: warning: {line}", file=sys.stderr)
        self.lines = []


def run_on_uvloop(main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` on a uvloop event loop (the loop is a factory, as in uvicorn)."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
