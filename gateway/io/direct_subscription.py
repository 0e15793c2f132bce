"""NATS subscriptions that hand each message straight to a handler: no queue and no task per subject.

nats-py gives every subscription an ``asyncio.Queue`` and a task that awaits it: about 4-5 KB and 20 us
to create, and a queue hop plus two coroutines per message. A node holds one subscription per local
user and per local room (that is what lets NATS route each message only to nodes that need it), so with
thousands of users that overhead would be most of a connection's memory and a third of its delivery CPU.

A :class:`DirectSubscription` is still a real nats-py ``Subscription`` registered under its own sid, so
the server sees one SUB per subject and nats-py re-sends it after a reconnect, unsubscribes and drains
it as usual; only its "queue" is a :class:`Dispatch` that calls the handler synchronously from nats-py's
read loop. It relies on nats-py internals (``_subs``, ``_sid``, ``_send_subscribe`` and the fields of
``Subscription``), so :func:`supported` checks them and the bus falls back to ordinary subscriptions when
a nats-py release changes them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

log = logging.getLogger("prism.bus")

# subject, reply, payload, headers -> an awaitable only if I/O is left to do
Handler = Callable[[str, str, bytes, dict[str, str] | None], Awaitable[None] | None]

_SUBSCRIPTION_FIELDS = (
    "_conn", "_id", "_subject", "_queue", "_max_msgs", "_received", "_cb", "_future", "_closed",
    "_pending_msgs_limit", "_pending_bytes_limit", "_pending_queue", "_pending_next_msgs_calls",
    "_pending_size", "_wait_for_msgs_task", "_message_iterator", "_jsi",
)  # fmt: skip


def supported(nc: NatsClient) -> bool:
    """Whether this nats-py has the internals direct subscriptions rely on."""
    probe = Subscription(nc)
    return (
        all(hasattr(probe, name) for name in _SUBSCRIPTION_FIELDS)
        and isinstance(getattr(nc, "_subs", None), dict)
        and isinstance(getattr(nc, "_sid", None), int)
        and callable(getattr(nc, "_send_subscribe", None))
    )


class Dispatch:
    """Stands in for a subscription's message queue: ``put_nowait`` runs the handler right away."""

    __slots__ = ("handler", "tasks")

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.tasks: set[asyncio.Task[None]] = set()

    def put_nowait(self, msg: Msg) -> None:
        """What nats-py's own parser calls (when :mod:`gateway.io.nats_reader` is not installed)."""
        self.deliver(msg.subject, msg.reply, msg.data, msg.headers)

    def deliver(self, subject: str, reply: str, data: bytes, headers: dict[str, str] | None) -> None:
        try:
            pending = self.handler(subject, reply, data, headers)
        except Exception:
            log.exception("handler for %s failed", subject)
            return
        if pending is not None:
            task = asyncio.ensure_future(pending)
            self.tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("handler I/O failed: %s", task.exception())

    # What nats-py calls on a queue when it drains a subscription: nothing is ever waiting here.
    def empty(self) -> bool:
        return True

    async def join(self) -> None:
        return None


class DirectSubscription(Subscription):
    def __init__(self, nc: NatsClient, sid: int, subject: str, dispatch: Dispatch) -> None:
        # Deliberately not Subscription.__init__: it allocates the queue this class exists to avoid.
        # Assigned one by one, in the same order every time, so instances share one key table (323 bytes
        # each, where filling __dict__ with update() made 618).
        self._conn = nc
        self._id = sid
        self._subject = subject
        self._queue = ""
        self._max_msgs = 0
        self._received = 0
        self._cb = None
        self._future = None
        self._closed = False
        self._pending_msgs_limit = 0
        self._pending_bytes_limit = 0  # 0 disables nats-py's pending-bytes check: nothing ever pends
        self._pending_queue = dispatch  # type: ignore[assignment]
        self._pending_next_msgs_calls = None  # type: ignore[assignment]
        self._pending_size = 0
        self._wait_for_msgs_task = None
        self._message_iterator = None
        self._jsi = None


async def subscribe(nc: NatsClient, subject: str, dispatch: Dispatch) -> DirectSubscription:
    nc._sid += 1
    sub = DirectSubscription(nc, nc._sid, subject, dispatch)
    nc._subs[sub._id] = sub
    await nc._send_subscribe(sub)
    return sub
