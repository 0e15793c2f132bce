"""Every ``PRISM_*`` environment variable Prism reads, so that one it does not read (``PRISM_NATS_ULR``,
say) is reported by ``prism gateway``, ``prism notify`` and ``prism dev`` instead of silently ignored.

It knows every process's settings (``prism dev`` hands one environment to all of them), so it imports
every config object: the command imports it only once a subcommand's arguments are parsed."""

from __future__ import annotations

from collections.abc import Mapping

from gateway.config import GatewayConfig
from notification_service.config import NotifyConfig
from shared.config import ENV_PREFIX, env_names, unknown_variables
from shared.demo_backend import DemoConfig
from shared.http_demo import HttpDemoConfig

# Read outside the two config objects, so not misspellings: the log format (shared/logs.py), the load
# tests' settings (loadtest/), and the test suite's (tests/).
OTHER_VARIABLES = frozenset(
    {
        "PRISM_LOG_FORMAT",
        "PRISM_URL",
        "PRISM_ROOM",
        "PRISM_REQUEST_EVENT",
        "PRISM_PUBLISH_EVENT",
        "PRISM_PUBLISH_RATE",
        "PRISM_PEERS_CACHE",
        "PRISM_PEER_REDIS_URL",
        "PRISM_TEST_ARTIFACTS",
        "PRISM_TEST_DOCKER",
        "PRISM_CHROMIUM",
        "PRISM_TSC",
    }
)


def known_variables() -> frozenset[str]:
    return (
        env_names(GatewayConfig)
        | env_names(NotifyConfig)
        | env_names(DemoConfig)
        | env_names(HttpDemoConfig)
        | OTHER_VARIABLES
    )


def misspelled(environ: Mapping[str, str]) -> list[str]:
    """One warning per ``PRISM_*`` variable of ``environ`` that Prism does not read."""
    return unknown_variables(environ, known_variables())


def without_unknown(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` minus the ``PRISM_*`` variables Prism does not read: what ``prism dev`` hands its
    processes once it has warned about them, so that each mistake is reported once, not once per child."""
    known = known_variables()
    return {k: v for k, v in environ.items() if not k.startswith(ENV_PREFIX) or k in known}
