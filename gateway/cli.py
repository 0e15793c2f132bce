"""The ``prism`` command: ``prism dev`` (everything, embedded), ``prism gateway`` (one node),
``prism notify`` (one notification service instance) and ``prism demo-backend`` (the demo backend)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

import uvloop

from gateway.config import GatewayConfig
from gateway.environment import misspelled
from notification_service.config import NotifyConfig
from shared import demo_backend, http_demo, logs, tracing
from shared.config import add_arguments, env_name, load
from shared.errors import ConfigError

log = logging.getLogger("prism.config")


def setup_logging(level: str, log_format: str = "text") -> None:
    """Logging (``text`` or ``json`` lines on stderr, see shared/logs.py)."""
    logs.setup(level, log_format)


def setup_telemetry(args: argparse.Namespace, level: str, service_name: str | None) -> None:
    """Logs as ``--log-format`` / ``PRISM_LOG_FORMAT`` say, then traces if the ``OTEL_*`` variables ask
    for them (``OTEL_TRACES_EXPORTER``, see shared/tracing.py). ``prism dev`` (no service name) traces
    nothing itself: its processes inherit the environment, the log format included."""
    log_format = logs.check_format(args.log_format or os.environ.get("PRISM_LOG_FORMAT", "text"))
    if args.log_format:
        os.environ["PRISM_LOG_FORMAT"] = log_format  # for the processes prism dev starts
    setup_logging(level, log_format)
    if service_name is not None:
        tracing.configure(service_name)


def _add_log_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format",
        dest="log_format",
        default=None,
        metavar="V",
        help="log lines as text or json (env PRISM_LOG_FORMAT, default 'text'; json for production)",
    )


def run_on_uvloop(main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` on a uvloop event loop (the loop is a factory, as in uvicorn)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prism", description="Prism WebSocket gateway on NATS")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = commands.add_parser("dev", help="run NATS, N gateway nodes and the backends locally")
    dev.add_argument("--nodes", type=int, default=2, help="gateway nodes to start (default 2)")
    dev.add_argument("--port", type=int, default=8080, help="port of the first node (default 8080)")
    dev.add_argument("--host", default="127.0.0.1", help="address the nodes listen on (default 127.0.0.1)")
    dev.add_argument(
        "--no-demo-backend",
        dest="demo_backend",
        action="store_false",
        help="do not run the demo backend (echo, chat.send, chat.history): your own backend answers them",
    )
    dev.add_argument(
        "--ready-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds to wait for NATS (PRISM_NATS_URL), then for each process, to be ready (default 30)",
    )
    dev.add_argument(
        "--http-backend",
        dest="http_backend",
        action="store_true",
        help="also run the example HTTP backend (http.* events, connects, disconnects; needs the http-demo "
        "extra) and each node's HTTP API on port + 100",
    )
    _add_log_format(dev)

    gateway = commands.add_parser("gateway", help="run one gateway node against PRISM_NATS_URL")
    add_arguments(gateway, GatewayConfig)
    _add_log_format(gateway)

    notify = commands.add_parser("notify", help="run one notification service instance (PRISM_NATS_URL)")
    add_arguments(notify, NotifyConfig)
    _add_log_format(notify)

    demo = commands.add_parser(
        "demo-backend", help="run the demo backend: echo, chat.send, chat.history (PRISM_NATS_URL)"
    )
    add_arguments(demo, demo_backend.DemoConfig)
    _add_log_format(demo)

    http = commands.add_parser(
        "http-demo", help="run the example HTTP backend (Starlette; needs the http-demo extra)"
    )
    add_arguments(http, http_demo.HttpDemoConfig)
    _add_log_format(http)

    loadtest = commands.add_parser(
        "loadtest",
        help="benchmark Prism against the websockets ceiling (python -m loadtest --help)",
        add_help=False,
    )
    loadtest.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["loadtest"]:  # its own options: hand them over untouched
        try:
            from loadtest.cli import main as loadtest_main
        except ModuleNotFoundError as exc:
            from loadtest.extra import needs_extra

            print(needs_extra(exc, "prism loadtest"), file=sys.stderr)
            return 1
        return loadtest_main(argv[1:])
    args = build_parser().parse_args(argv)
    unknown = misspelled(os.environ)  # logged once logging is set up; printed if the config is refused

    def warn_unknown() -> None:
        for line in unknown:
            log.warning("%s", line)
        unknown.clear()

    try:
        if args.command == "gateway":
            config = load(GatewayConfig, args)
            setup_telemetry(args, config.log_level, "prism-gateway")
            warn_unknown()
            from gateway.node import run

            return run_on_uvloop(run(config))
        if args.command == "notify":
            notify_config = load(NotifyConfig, args)
            setup_telemetry(args, notify_config.log_level, "prism-notify")
            warn_unknown()
            from notification_service.service import run as run_notify

            # The default metrics port gives way to a free one if taken (a second instance on this host);
            # one the operator set does not: Prometheus scrapes it.
            fallback = args.metrics_port is None and env_name("metrics_port") not in os.environ
            return run_on_uvloop(run_notify(notify_config, fallback))
        if args.command == "demo-backend":
            demo_config = load(demo_backend.DemoConfig, args)
            setup_telemetry(args, demo_config.log_level, None)  # it makes no spans of its own
            return run_on_uvloop(demo_backend.run(demo_config))
        if args.command == "http-demo":
            http_config = load(http_demo.HttpDemoConfig, args)
            setup_telemetry(args, http_config.log_level, None)
            return run_on_uvloop(http_demo.run(http_config))
        if args.command == "dev":
            setup_telemetry(args, "info", None)
            warn_unknown()  # only here: prism dev leaves these variables out of its processes' environment
            from gateway.dev import StartFailed, run_dev

            try:
                dev = run_dev(
                    args.nodes,
                    args.port,
                    args.host,
                    args.ready_timeout,
                    args.demo_backend,
                    http_backend=args.http_backend,
                )
                return run_on_uvloop(dev)
            except StartFailed as exc:
                print(f"prism dev: {exc}", file=sys.stderr)
                return 1
    except ConfigError as exc:
        for line in unknown:
            print(f"prism: warning: {line}", file=sys.stderr)
        print(f"prism: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2
