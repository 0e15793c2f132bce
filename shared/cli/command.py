"""The ``prism`` command: one subcommand per process Prism runs, each imported only when it is run.

    prism dev            NATS, N gateway nodes and the backends on this machine (shared/cli/dev.py)
    prism gateway        one gateway node (gateway/)
    prism notify         one notification service instance (notification_service/)
    prism demo-backend   the demo backend (shared/demo_backend.py)
    prism http-demo      the example HTTP backend (shared/http_demo.py)
    prism loadtest       the benchmarks (loadtest/, needs the loadtest extra)

``prism <command>`` is the module ``shared/cli/<command>.py`` (``-`` spelled ``_``), which has
``configure(parser)``, adding its flags, and ``run(args, unknown) -> int``. ``prism --help`` lists the
commands without importing any; ``prism gateway --help`` imports the gateway's config and nothing of the
notification service or the load tests.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from shared.cli.common import UnknownVariables
from shared.errors import ConfigError


class SubcommandModule(Protocol):
    def configure(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace, unknown: UnknownVariables) -> int: ...


@dataclass(frozen=True, slots=True)
class Subcommand:
    help: str
    module: str  # imported only when this subcommand is asked for (its flags, its run)

    def load(self) -> SubcommandModule:
        module: SubcommandModule = importlib.import_module(self.module)
        return module


SUBCOMMANDS = {
    "dev": Subcommand("run NATS, N gateway nodes and the backends locally", "shared.cli.dev"),
    "gateway": Subcommand("run one gateway node against PRISM_NATS_URL", "shared.cli.gateway"),
    "notify": Subcommand("run one notification service instance (PRISM_NATS_URL)", "shared.cli.notify"),
    "demo-backend": Subcommand(
        "run the demo backend: echo, chat.send, chat.history (PRISM_NATS_URL)", "shared.cli.demo_backend"
    ),
    "http-demo": Subcommand(
        "run the example HTTP backend (Starlette; needs the http-demo extra)", "shared.cli.http_demo"
    ),
}
LOADTEST_HELP = "benchmark Prism against the websockets ceiling (python -m loadtest --help)"


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``prism``: every subcommand named with its help, and the flags of ``chosen`` only
    (the others' modules stay unimported)."""
    parser = argparse.ArgumentParser(prog="prism", description="Prism WebSocket gateway on NATS")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, subcommand in SUBCOMMANDS.items():
        sub = commands.add_parser(name, help=subcommand.help)
        if name == chosen:
            subcommand.load().configure(sub)
    loadtest = commands.add_parser("loadtest", help=LOADTEST_HELP, add_help=False)
    loadtest.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["loadtest"]:  # its own options: hand them over untouched
        return _loadtest(argv[1:])
    chosen = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    args = build_parser(chosen).parse_args(argv)
    from shared.cli.environment import misspelled  # after parsing: --help needs no config but its own

    unknown = UnknownVariables(misspelled(os.environ))
    try:
        return SUBCOMMANDS[args.command].load().run(args, unknown)
    except ConfigError as exc:
        unknown.print()
        print(f"prism: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _loadtest(argv: list[str]) -> int:
    try:
        from loadtest.cli import main as loadtest_main
    except ModuleNotFoundError as exc:
        from loadtest.extra import needs_extra

        print(needs_extra(exc, "prism loadtest"), file=sys.stderr)
        return 1
    return loadtest_main(argv)
