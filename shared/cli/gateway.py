"""``prism gateway``: one gateway node against ``PRISM_NATS_URL`` (gateway/node.py)."""

from __future__ import annotations

import argparse

from gateway.config import GatewayConfig
from shared.cli.common import UnknownVariables, add_log_format, run_on_uvloop, setup_telemetry
from shared.config import add_arguments, load


def configure(parser: argparse.ArgumentParser) -> None:
    add_arguments(parser, GatewayConfig)
    add_log_format(parser)


def run(args: argparse.Namespace, unknown: UnknownVariables) -> int:
    config = load(GatewayConfig, args)
    setup_telemetry(args, config.log_level, "prism-gateway")
    unknown.log()
    from gateway.node import run as run_node

    return run_on_uvloop(run_node(config))
