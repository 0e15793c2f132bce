"""Whether a process can listen where its settings say, asked before it connects to anything.

A gateway node that found its port taken only when it started serving would already have connected to
NATS, swept the presence entries an earlier process with its node id left (those of a live twin holding
that very port, say) and started beating. So the port is checked first, bound exactly as the server will
bind it and let go; a process that takes it in between is caught by the server's own error, which
:func:`unavailable` turns into the same one line.
"""

from __future__ import annotations

import asyncio
import errno
from dataclasses import dataclass

from shared.errors import PortUnavailable


@dataclass(frozen=True, slots=True)
class Settings:
    """How the user sets the address and the port, for the message: e.g. ``--port or PRISM_PORT``."""

    host: str
    port: str


GATEWAY = Settings("--host or PRISM_HOST", "--port or PRISM_PORT")


async def check_can_listen(host: str, port: int, settings: Settings) -> None:
    """Raise :class:`PortUnavailable` if ``host``:``port`` cannot be bound now (its message names the
    setting to change). Port 0 (any free port) always can."""
    if port == 0:
        return
    try:
        server = await asyncio.get_running_loop().create_server(
            asyncio.Protocol, host, port, start_serving=False
        )
    except OSError as exc:
        raise unavailable(exc, host, port, settings) from None
    server.close()
    await server.wait_closed()


def unavailable(exc: OSError, host: str, port: int, settings: Settings) -> PortUnavailable:
    """The one line to print when binding ``host``:``port`` failed with ``exc``."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        why = f"the port is in use by another process (choose another with {settings.port})"
    elif exc.errno == errno.EACCES:
        why = f"permission denied: ports below 1024 need privileges (choose another with {settings.port})"
    elif exc.errno == errno.EADDRNOTAVAIL:
        why = f"{host} is not an address of this host (see {settings.host})"
    else:
        why = f"{exc.strerror or exc} (see {settings.host})"
    return PortUnavailable(f"cannot listen on {where}: {why}")
