"""``prism notify``: one notification service instance (notification_service/service.py)."""

from __future__ import annotations

import argparse
import os

from notification_service.config import NotifyConfig
from shared.cli.common import UnknownVariables, add_log_format, run_on_uvloop, setup_telemetry
from shared.config import add_arguments, env_name, load


def configure(parser: argparse.ArgumentParser) -> None:
    add_arguments(parser, NotifyConfig)
    add_log_format(parser)


def run(args: argparse.Namespace, unknown: UnknownVariables) -> int:
    config = load(NotifyConfig, args)
    setup_telemetry(args, config.log_level, "prism-notify")
    unknown.log()
    from notification_service.service import run as run_notify

    # The default metrics port gives way to a free one if taken (a second instance on this host); one the
    # operator set does not: Prometheus scrapes it.
    fallback = args.metrics_port is None and env_name("metrics_port") not in os.environ
    return run_on_uvloop(run_notify(config, fallback))
