"""Where a :class:`shared.client.PrismClient` is in its life, and what its callbacks receive."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

from shared.client.positions import Recovery

# A backend's message, exactly as it was published: text or binary.
Delivery = str | bytes


class ConnState(StrEnum):
    """Where a :class:`PrismClient` is in its life."""

    CONNECTING = "connecting"  # the first connection is being opened
    CONNECTED = "connected"  # welcome received and rooms rejoined: commands go out at once
    RECONNECTING = "reconnecting"  # the connection was lost and a new one is being opened
    CLOSED = "closed"  # for good: closed by the caller, a terminal close, or the backoff gave up


@dataclass(frozen=True, slots=True)
class StateChange:
    """What ``on_state`` receives. One ``connecting`` / ``reconnecting`` change is reported per attempt.

    ``url``: the URL being tried (or connected to). ``attempt``: 1 for the first attempt of an outage.
    ``delay``: seconds the client waits before this attempt. ``code`` / ``reason``: the close that
    started the outage (or, for ``closed``, the final one). ``error``: why the previous attempt failed.
    """

    state: ConnState
    url: str | None = None
    attempt: int = 0
    delay: float | None = None
    code: int | None = None
    reason: str = ""
    error: BaseException | None = None


StateCallback = Callable[[StateChange], None]
RecoveryCallback = Callable[[Recovery], None]
# A JWT, or a function giving one (called before every connection attempt, so a reconnect after a long
# outage presents a fresh token).
TokenSource = str | Callable[[], str | Awaitable[str]]
