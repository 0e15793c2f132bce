"""Answers clients' ``notify.self`` requests (``PRISM_NOTIFY_CLIENT_REQUESTS=true``; off by default).

A browser cannot publish to NATS, but a connected client can send an event request:
``{"event":"notify.self","data":{"payload":...},"ref":1}``. The gateway turns it into a NATS request on
``client.event.notify.self`` with the connection's user in ``Prism-User``. This listener (queue group
``prism-notify``, so one instance answers each) turns it into a notification for exactly that user,
published into the service's own ``NOTIFICATIONS`` stream on ``notify.user.<user>``, so it takes the
normal path (receipts, inbox, retries) and reaches every connection of the user. It replies
``{"id":"self-..."}`` once the stream has stored it, or ``{"error":"<slug>","message":"..."}``.

The decisions (who may, how big, how often) are :func:`core.parse_self_request` and
:class:`core.SelfLimiter`.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

import orjson
from nats.aio.msg import Msg

from notification_service import core
from notification_service.config import NotifyConfig
from notification_service.lifecycle import QUEUE
from notification_service.metrics import NotifyMetrics
from shared import headers

log = logging.getLogger("prism.notify.client_requests")

PUBLISH_TIMEOUT = 2.0  # seconds to wait for JetStream's ack; the gateway's request timeout is longer


class SelfNotifyListener:
    def __init__(
        self,
        nc: Any,
        js: Any,
        config: NotifyConfig,
        metrics: NotifyMetrics,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.nc = nc
        self.js = js
        self.config = config
        self.subjects = config.subjects
        self.metrics = metrics
        self.monotonic = monotonic
        self.limiter = core.SelfLimiter(config.notify_client_rate, config.notify_client_burst)
        self._sub: Any = None

    @property
    def subject(self) -> str:
        return self.subjects.client_event(core.SELF_EVENT)

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(self.subject, queue=QUEUE, cb=self._on_request)

    async def stop(self) -> None:
        if self._sub is not None and not self.nc.is_closed:
            await self._sub.unsubscribe()
        self._sub = None

    async def _on_request(self, msg: Msg) -> None:
        reply = await self.handle(msg.data, (msg.headers or {}).get(headers.USER))
        if msg.reply:
            try:
                await msg.respond(reply)
            except Exception as exc:
                log.debug("answering a notify.self request failed: %r", exc)

    async def handle(self, data: bytes, user: str | None) -> bytes:
        """The reply to one request (published notification, or refusal)."""
        request = core.parse_self_request(user, data, self.config.notify_client_max_bytes)
        if isinstance(request, core.SelfRequest):
            wait = self.limiter.take(request.user, self.monotonic())
            if wait > 0:
                request = core.Refused(
                    core.SelfRefusal.RATE_LIMITED,
                    f"at most {self.config.notify_client_rate:g} a minute; try again in {wait:.1f}s",
                    retry_after=wait,
                )
        if isinstance(request, core.Refused):
            self.metrics.client_requests.labels(outcome=request.error.value).inc()
            return request.reply()
        notification_id = core.SELF_ID_PREFIX + secrets.token_urlsafe(12)
        try:
            await self.js.publish(
                self.subjects.notify_user(request.user),
                core.self_notification(request, notification_id),
                headers={core.MSG_ID: notification_id},
                stream=self.config.stream,
                timeout=PUBLISH_TIMEOUT,
            )
        except Exception as exc:
            log.warning("storing %s's notify.self request failed: %r", request.user, exc)
            refused = core.Refused(
                core.SelfRefusal.UNAVAILABLE, f"could not store the notification: {exc!r:.200}"
            )
            self.metrics.client_requests.labels(outcome=refused.error.value).inc()
            return refused.reply()
        self.metrics.client_requests.labels(outcome="accepted").inc()
        return orjson.dumps({"id": notification_id})
