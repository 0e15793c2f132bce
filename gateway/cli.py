"""The ``prism`` command: ``prism dev`` (everything, embedded), ``prism gateway`` (one node) and
``prism notify`` (one notification service instance)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

import uvloop

from gateway.config import GatewayConfig
from notification_service.config import NotifyConfig
from shared.config import add_arguments, load
from shared.errors import ConfigError


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("websockets").setLevel(logging.WARNING)


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

    gateway = commands.add_parser("gateway", help="run one gateway node against PRISM_NATS_URL")
    add_arguments(gateway, GatewayConfig)

    notify = commands.add_parser("notify", help="run one notification service instance (PRISM_NATS_URL)")
    add_arguments(notify, NotifyConfig)

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
        from loadtest.cli import main as loadtest_main

        return loadtest_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        if args.command == "gateway":
            config = load(GatewayConfig, args)
            setup_logging(config.log_level)
            from gateway.node import run

            return run_on_uvloop(run(config))
        if args.command == "notify":
            notify_config = load(NotifyConfig, args)
            setup_logging(notify_config.log_level)
            from notification_service.service import run as run_notify

            return run_on_uvloop(run_notify(notify_config))
        if args.command == "dev":
            setup_logging("info")
            from gateway.dev import run_dev

            return run_on_uvloop(run_dev(args.nodes, args.port, args.host))
    except ConfigError as exc:
        print(f"prism: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2
