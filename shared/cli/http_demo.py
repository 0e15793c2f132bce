"""``prism http-demo``: the example HTTP backend (shared/http_demo.py; needs the http-demo extra). It
makes no spans of its own."""

from __future__ import annotations

import argparse

from shared import http_demo
from shared.cli.common import UnknownVariables, add_log_format, run_on_uvloop, setup_telemetry
from shared.config import add_arguments, load


def configure(parser: argparse.ArgumentParser) -> None:
    add_arguments(parser, http_demo.HttpDemoConfig)
    add_log_format(parser)


def run(args: argparse.Namespace, unknown: UnknownVariables) -> int:
    config = load(http_demo.HttpDemoConfig, args)
    setup_telemetry(args, config.log_level, None)
    return run_on_uvloop(http_demo.run(config))
