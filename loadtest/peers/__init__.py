"""Opt-in peers: Prism's scenarios against Socket.IO and Django Channels, each fanning out through Redis.

These are never required by the test suite and nothing installs them ahead of time: :func:`install`
(called by each peer's ``start()`` too, and idempotent) fetches on demand, into a cache directory outside
the repository (``$PRISM_PEERS_CACHE`` or ``~/.cache/prism-peers``), Debian's ``redis-server`` if it is
missing, the Socket.IO server's npm modules (from the committed lock file) and a virtualenv of its own for
Django Channels (never the project's). Every process a peer starts (Redis, node, the ASGI server and the
Django backend that publishes) is a child stopped by PID in the target's ``stop()``.

    socketio   Socket.IO 4 + @socket.io/redis-adapter; publishes in @socket.io/redis-emitter's format
    channels   Django Channels + channels_redis; publishes with channel_layer.group_send / send
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from loadtest.peers import provision

if TYPE_CHECKING:
    from loadtest.targets.base import Target


# The targets are imported when one is made, not here: installing a peer (python -m loadtest.peers)
# needs only the standard library, not the loadtest extra the targets' clients use.
def _socketio() -> Target:
    from loadtest.peers.socketio.target import SocketIOTarget

    return SocketIOTarget()


def _channels() -> Target:
    from loadtest.peers.channels.target import ChannelsTarget

    return ChannelsTarget()


PEERS: dict[str, Callable[[], Target]] = {"socketio": _socketio, "channels": _channels}

_INSTALLERS: dict[str, Callable[[], object]] = {
    "socketio": provision.socketio_modules,
    "channels": provision.channels_python,
}


def install(name: str) -> None:
    """Install what peer ``name`` needs (a no-op when it is there); raises ``PeerInstallError``."""
    if name not in _INSTALLERS:
        raise KeyError(f"unknown peer {name!r}; known: {', '.join(sorted(PEERS))}")
    _INSTALLERS[name]()
