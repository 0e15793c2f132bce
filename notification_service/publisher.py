"""Send notifications from a Python backend (nats-py). Any NATS client can do the same: a JetStream publish
of ``{"id","payload","ttl"?}`` on ``notify.user.<id>``, ``notify.room.<room>`` or ``notify.broadcast`` with
the header ``Nats-Msg-Id`` (see ``docs/notifications.md``).

    notifier = Notifier(nc.jetstream())
    await notifier.to_user("alice", "order-42-shipped", {"title": "Your order shipped"}, ttl=3600)
"""

from __future__ import annotations

from typing import Any

import orjson

from notification_service.core import MSG_ID, id_problem
from shared.subjects import Subjects


def encode(notification_id: str, payload: Any, ttl: float | None = None) -> bytes:
    """The JSON body of a notification; raises ValueError for an id the service would refuse."""
    if (problem := id_problem(notification_id)) is not None:
        raise ValueError(problem)
    body: dict[str, Any] = {"id": notification_id, "payload": payload}
    if ttl is not None:
        body["ttl"] = ttl
    return orjson.dumps(body)


class Notifier:
    def __init__(self, js: Any, subjects: Subjects | None = None, stream: str = "NOTIFICATIONS") -> None:
        self.js = js
        self.subjects = subjects or Subjects()
        self.stream = stream

    async def to_user(
        self, user_id: str, notification_id: str, payload: Any, *, ttl: float | None = None, msg_id: str = ""
    ) -> Any:
        return await self.publish(self.subjects.notify_user(user_id), notification_id, payload, ttl, msg_id)

    async def to_room(
        self, room: str, notification_id: str, payload: Any, *, ttl: float | None = None, msg_id: str = ""
    ) -> Any:
        return await self.publish(self.subjects.notify_room(room), notification_id, payload, ttl, msg_id)

    async def broadcast(
        self, notification_id: str, payload: Any, *, ttl: float | None = None, msg_id: str = ""
    ) -> Any:
        return await self.publish(self.subjects.notify_broadcast, notification_id, payload, ttl, msg_id)

    async def publish(
        self, subject: str, notification_id: str, payload: Any, ttl: float | None = None, msg_id: str = ""
    ) -> Any:
        """Publish and wait for JetStream's acknowledgement (the notification is then stored); retrying
        with the same ``msg_id`` (default: the id) within the stream's duplicate window stores it once."""
        data = encode(notification_id, payload, ttl)
        headers = {MSG_ID: msg_id or notification_id}
        return await self.js.publish(subject, data, headers=headers, stream=self.stream)
