"""An asyncio Python client for Prism: connect, read the welcome, join rooms, send events and requests,
iterate the messages backends deliver, and (opt-in) reconnect.

    async with await PrismClient.connect("ws://localhost:8080/ws", user="alice") as client:
        await client.join("lobby")
        reply = await client.request("echo", {"hi": 1})
        message = await client.receive()          # next delivery: bytes or str, unchanged

Reconnecting, across several nodes (no load balancer needed):

    client = await PrismClient.connect(
        ["ws://node1:8080/ws", "ws://node2:8080/ws"], user="alice", reconnect=True,  # or a Backoff(...)
        on_state=lambda change: print(change.state, change.code),
    )

With ``reconnect`` on, a close that allows reconnecting (:func:`shared.close_codes.should_reconnect`:
1001, 1006, 1011, 1012, 1013, 4000-4499) or a failed attempt (refused TCP, timeout, HTTP 408/429/5xx)
makes the client try again after an exponential, fully jittered delay (:class:`shared.backoff.Backoff`),
moving to the next URL each time. Terminal closes (1000 from the server, 1008, 4500-4999, ...) and refused
handshakes (HTTP 400, 401, 403, 404, ...) stop it for good. While it reconnects:

- requests and commands in flight fail with :class:`ConnectionLost` (never resent: the node may have
  acted on them); deliveries already received stay readable with :meth:`PrismClient.receive`;
- new sends, commands and requests wait for the next connection, bounded by their ``timeout``;
- after the new welcome, ``conn_id``, ``node``, ``welcome`` and ``url`` describe the new connection, and
  every room the client had joined is joined again before the client reports ``connected``. A room the
  node refuses is dropped and its error frame (with an added ``"room"`` key) goes to ``client.errors``.

With authentication on, pass ``token=`` (a JWT, or a function returning one, called before every
connection attempt) and call ``await client.refresh(new_token)`` before the token expires. In rooms with
presence events, ``client.members(room)`` is the room's users and ``client.presence`` a queue of the
presence frames themselves.

Rooms a backend joined on the client's behalf (``control.conn.<id>.join``) are not tracked by the client:
the backend sees the new connection on ``client.connect`` and can join it again.

Missed-message recovery (docs/protocol.md, "Recovery"): ``await client.join("lobby", recover=True)`` and
``PrismClient.connect(..., recover=True)`` (the user's own stream) make the node send positions with
each delivery of a recoverable room or user. The client keeps them (``client.positions``) and sends
them on every rejoin and reconnect, to whichever node it reaches, which first sends what it missed, in
order, with no duplicates. Each outcome goes to ``client.recoveries`` (and ``on_recovery``): a
:class:`shared.client.Recovery` whose ``recovered`` is False when messages were lost.

Run ``python -m shared.client URL [URL ...]`` for a tiny interactive console that prints what arrives.

The package, one concern per module: :mod:`~shared.client.client` (the commands, the deliveries and the
supervisor that replaces a lost connection), :mod:`~shared.client.link` (one WebSocket: dial, welcome,
commands awaiting answers), :mod:`~shared.client.reconnect` (what is retried, which URL next, the
backoff), :mod:`~shared.client.positions` (recovery bookkeeping), :mod:`~shared.client.views` (room members
and recovery outcomes), :mod:`~shared.client.state` (states and callbacks), :mod:`~shared.client.console`.
"""

from shared.backoff import Backoff
from shared.client.client import PrismClient
from shared.client.link import with_user
from shared.client.positions import Positions, Recovery
from shared.client.reconnect import RETRY_STATUSES, retryable, terminal_failure
from shared.client.state import ConnState, Delivery, StateChange, TokenSource
from shared.errors import ClientError, ConnectFailed, ConnectionLost, RequestFailed
from shared.frames import Position

__all__ = [
    "RETRY_STATUSES",
    "Backoff",
    "ClientError",
    "ConnState",
    "ConnectFailed",
    "ConnectionLost",
    "Delivery",
    "Position",
    "Positions",
    "PrismClient",
    "Recovery",
    "RequestFailed",
    "StateChange",
    "TokenSource",
    "retryable",
    "terminal_failure",
    "with_user",
]
