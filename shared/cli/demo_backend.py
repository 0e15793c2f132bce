"""``prism demo-backend``: the demo backend (shared/demo_backend.py), answering echo, chat.send and
chat.history. It makes no spans of its own."""

from __future__ import annotations

import argparse

from shared import demo_backend
from shared.cli.common import UnknownVariables, add_log_format, run_on_uvloop, setup_telemetry
from shared.config import add_arguments, load


def configure(parser: argparse.ArgumentParser) -> None:
    add_arguments(parser, demo_backend.DemoConfig)
    add_log_format(parser)


def run(args: argparse.Namespace, unknown: UnknownVariables) -> int:
    config = load(demo_backend.DemoConfig, args)
    setup_telemetry(args, config.log_level, None)
    return run_on_uvloop(demo_backend.run(config))
