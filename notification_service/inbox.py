"""Offline users' inboxes in the stream ``NOTIFICATIONS_INBOX``: store a notification, and replay a user's
inbox to a connection that just opened, removing each one once its receipt is in.

Storing races with the user connecting: the delivery got "no responders", the user connects and the
service replays the inbox, and only then the store lands. So after every store the service offers the
notification to ``user.<id>`` once more: "no responders" then means the user's subscription did not exist
after the store was acknowledged, so the ``client.connect`` that follows it will replay the stored copy;
a receipt means the user is back, and the copy is removed (a replay running at the same moment may
deliver it too: clients drop repeated ids).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import nats.errors
import nats.js.errors

from notification_service import core
from notification_service.metrics import NotifyMetrics
from notification_service.receipts import Receipts
from shared.subjects import Subjects

log = logging.getLogger("prism.notify.inbox")


# JetStream's answers to deleting a message that is not there: 10057 "no message found" (a second
# delete), 10043 "sequence N not found" (seen when two replays raced for the same message).
_ALREADY_GONE = frozenset({10057, 10043})  # JSStreamMsgDeleteFailedF, JSSequenceNotFoundErrF


class Inbox:
    def __init__(
        self,
        js: Any,
        nc: Any,
        stream: str,
        subjects: Subjects,
        receipts: Receipts,
        receipt_timeout: float,
        metrics: NotifyMetrics,
        clock: Callable[[], float],
    ) -> None:
        self.js = js
        self.nc = nc
        self.stream = stream
        self.subjects = subjects
        self.receipts = receipts
        self.receipt_timeout = receipt_timeout
        self.metrics = metrics
        self.clock = clock

    async def store(self, notification: core.Notification, frame: bytes) -> None:
        """Store for its (offline) user; raises on NATS errors, so the caller retries."""
        user = notification.target.name
        headers = {
            core.MSG_ID: core.inbox_msg_id(user, notification.id),
            core.H_ID: notification.id,
        }
        ttl = core.inbox_ttl(notification.expires_at, self.clock())
        if ttl is not None:
            headers[core.H_EXPIRES] = repr(notification.expires_at)
            headers[core.MSG_TTL] = ttl
        ack = await self.js.publish(
            self.subjects.notify_inbox(user), frame, headers=headers, stream=self.stream
        )
        if ack.duplicate:  # stored before by a try that did not get to ack the original
            return
        self.metrics.stored.inc()
        result = await self.receipts.deliver(self.subjects.user(user), frame, self.receipt_timeout)
        if result.confirmed:
            await self.delete(ack.seq)
            self.metrics.replayed.inc()

    async def replay(self, conn_id: str, user: str) -> int:
        """Deliver ``user``'s inbox, oldest first, to ``conn_id``; each is removed once its receipt is in.
        Stops at the first one not confirmed (the connection is gone, or a timeout): what is left stays for
        the next connection. Returns how many were delivered."""
        subject = self.subjects.notify_inbox(user)
        target = self.subjects.conn(conn_id)
        sequence = 1
        delivered = 0
        while True:
            try:
                msg = await self.js.get_msg(
                    self.stream, seq=sequence, subject=subject, direct=True, next=True
                )
            except nats.js.errors.NotFoundError:
                return delivered
            expires_at = core.expires_header(msg.headers)
            if core.is_expired(expires_at, self.clock()):
                await self.delete(msg.seq)
                self.metrics.expired.labels(where="inbox").inc()
            else:
                result = await self.receipts.deliver(target, msg.data or b"", self.receipt_timeout, window=0)
                if not result.confirmed:
                    return delivered
                await self.delete(msg.seq)
                self.metrics.replayed.inc()
                delivered += 1
            sequence = msg.seq + 1

    async def delete(self, sequence: int) -> None:
        """Remove one inbox message (gone already is fine: another replay got there first)."""
        subject = f"$JS.API.STREAM.MSG.DELETE.{self.stream}"
        body = json.dumps({"seq": sequence, "no_erase": True}).encode()
        reply = await self.nc.request(subject, body, timeout=5)
        answer = json.loads(reply.data)
        error = answer.get("error")
        if error and error.get("code") != 404 and error.get("err_code") not in _ALREADY_GONE:
            raise nats.errors.Error(f"deleting inbox message {sequence}: {error.get('description', error)}")
