"""Helpers for backend services that reach clients through Prism over NATS (nats-py).

Everything here is a plain NATS publish or request on the subjects in :mod:`shared.subjects`; any NATS
client in any language can do the same (see ``docs/protocol.md``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import nats.errors
import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from shared import headers as h
from shared.subjects import Subjects


class PrismBackend:
    def __init__(self, nc: NatsClient, subjects: Subjects | None = None, *, sent_at: bool = False) -> None:
        """``sent_at``: stamp every delivery with the header ``Prism-Sent-At`` (the publish time), so the
        gateways measure ``prism_delivery_latency_seconds`` from it."""
        self.nc = nc
        self.subjects = subjects or Subjects()
        self.sent_at = sent_at

    def _headers(self, binary: bool) -> dict[str, str] | None:
        headers = {h.FRAME: h.FRAME_BINARY} if binary else None
        if self.sent_at:
            headers = (headers or {}) | {h.SENT_AT: f"{time.time():.6f}"}
        return headers

    async def publish(self, subject: str, payload: bytes | str, *, binary: bool = False) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        await self.nc.publish(subject, data, headers=self._headers(binary))

    async def to_conn(self, conn_id: str, payload: bytes | str, *, binary: bool = False) -> None:
        await self.publish(self.subjects.conn(conn_id), payload, binary=binary)

    async def to_user(self, user_id: str, payload: bytes | str, *, binary: bool = False) -> None:
        await self.publish(self.subjects.user(user_id), payload, binary=binary)

    async def to_room(self, room: str, payload: bytes | str, *, binary: bool = False) -> None:
        await self.publish(self.subjects.room(room), payload, binary=binary)

    async def deliver(
        self,
        subject: str,
        payload: bytes | str,
        *,
        binary: bool = False,
        timeout: float = 5.0,
        window: float = 0.25,
    ) -> list[dict[str, Any]]:
        """Publish with a reply subject and return the receipts, ``[{"node": ..., "delivered": n}, ...]``.

        A ``conn.`` target has one owner, so this returns at its receipt. For ``user.``/``room.`` every
        node with a recipient answers: receipts are collected until ``window`` seconds after the first.
        Raises ``nats.errors.NoRespondersError`` when nobody holds the target (a gone connection, an
        empty room), and returns ``[]`` if no receipt came within ``timeout``. A recoverable room or user
        (docs/protocol.md section 16) answers with the history stream's acknowledgement instead, which
        is not a receipt: this returns ``[]`` a ``window`` after it (use :meth:`store` there).
        """
        data = payload.encode() if isinstance(payload, str) else payload
        headers = self._headers(binary)
        single = subject.startswith(self.subjects.prefix + "conn.")
        return await self._gather(subject, data, headers, timeout, 0.0 if single else window)

    async def _gather(
        self, subject: str, data: bytes, headers: dict[str, str] | None, timeout: float, window: float
    ) -> list[dict[str, Any]]:
        """Publish with an inbox as reply subject; collect JSON replies until ``window`` after the first."""
        replies: asyncio.Queue[Msg] = asyncio.Queue()
        sub = await self.nc.subscribe(self.nc.new_inbox(), cb=replies.put)
        answers: list[dict[str, Any]] = []
        try:
            await self.nc.publish(subject, data, reply=sub.subject, headers=headers)
            try:
                first = await asyncio.wait_for(replies.get(), timeout)
            except TimeoutError:
                return answers
            if first.headers and first.headers.get(h.STATUS) == "503":
                raise nats.errors.NoRespondersError
            answers += _answer(first)
            deadline = asyncio.get_running_loop().time() + window
            while (left := deadline - asyncio.get_running_loop().time()) > 0:
                try:
                    answers += _answer(await asyncio.wait_for(replies.get(), left))
                except TimeoutError:
                    break
        finally:
            await sub.unsubscribe()
        return answers

    async def store(
        self,
        subject: str,
        payload: bytes | str,
        *,
        binary: bool = False,
        msg_id: str | None = None,
        timeout: float = 5.0,
    ) -> int:
        """Publish to a recoverable room or user (docs/protocol.md section 16) through JetStream, and
        return the message's stream sequence once it is stored: it then reaches every member online with
        recovery on, and every one that comes back within the history window. ``msg_id`` (the header
        ``Nats-Msg-Id``) makes a retry after a lost acknowledgement store it once. Raises
        ``nats.js.errors.NoStreamResponseError`` if no history stream captures ``subject``."""
        data = payload.encode() if isinstance(payload, str) else payload
        headers = self._headers(binary) or {}
        if msg_id is not None:
            headers["Nats-Msg-Id"] = msg_id
        ack = await self.nc.jetstream().publish(subject, data, timeout=timeout, headers=headers or None)
        return int(ack.seq)

    async def control(self, subject: str, body: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """A control request to one connection's node; raises NoRespondersError if it is gone."""
        msg = await self.nc.request(subject, orjson.dumps(body), timeout=timeout)
        answer: dict[str, Any] = orjson.loads(msg.data)
        return answer

    async def control_user(
        self, user_id: str, action: str, body: dict[str, Any], timeout: float = 2.0, window: float = 0.25
    ) -> list[dict[str, Any]]:
        """A control request to every node holding ``user_id``: one reply per such node, ``[]`` if none."""
        subject = self.subjects.control_user(user_id, action)
        return await self._gather(subject, orjson.dumps(body), None, timeout, window)

    async def close_conn(self, conn_id: str, code: int = 4500, reason: str = "closed by backend") -> Any:
        return await self.control(
            self.subjects.control_conn(conn_id, "close"), {"code": code, "reason": reason}
        )

    async def close_user(
        self, user_id: str, code: int = 4500, reason: str = "closed by backend"
    ) -> list[dict[str, Any]]:
        return await self.control_user(user_id, "close", {"code": code, "reason": reason})

    async def join(self, conn_id: str, room: str) -> Any:
        return await self.control(self.subjects.control_conn(conn_id, "join"), {"room": room})

    async def leave(self, conn_id: str, room: str) -> Any:
        return await self.control(self.subjects.control_conn(conn_id, "leave"), {"room": room})

    # -- presence queries (answered by any one node, from the presence bucket) -----------------------
    async def user_presence(self, user_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """``{"user","online","connections":[{"conn","node","connected_at"}]}``."""
        return await self._query(self.subjects.presence_user(user_id), b"", timeout)

    async def room_presence(
        self, room: str, timeout: float = 5.0, page_size: int | None = None
    ) -> dict[str, Any]:
        """``{"room","count","users","members":[{"conn","node","user","joined_at"}],"pages"}``: every page
        of the answer (a large room's comes as one message per ``page_size`` members) put together.
        ``timeout`` bounds the wait for each page."""
        body = orjson.dumps({"page_size": page_size}) if page_size is not None else b""
        inbox = self.nc.new_inbox()
        pages: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_page(msg: Msg) -> None:
            pages.put_nowait(msg.data)

        sub = await self.nc.subscribe(inbox, cb=on_page)
        try:
            await self.nc.publish(self.subjects.presence_room(room), body, reply=inbox)
            members: list[Any] = []
            users: set[str] = set()
            while True:
                try:
                    answer: dict[str, Any] = orjson.loads(await asyncio.wait_for(pages.get(), timeout))
                except TimeoutError:
                    raise nats.errors.TimeoutError from None
                if "error" in answer:
                    raise PresenceQueryError(str(answer["error"]), str(answer.get("message", "")))
                members += answer["members"]
                users.update(answer["users"])
                if answer.get("page", 1) >= answer.get("pages", 1):
                    break
        finally:
            await sub.unsubscribe()
        return {
            "room": room,
            "count": answer["count"],
            "users": sorted(users),
            "members": members,
            "pages": answer.get("pages", 1),
        }

    async def online(self, user_ids: list[str], timeout: float = 5.0) -> dict[str, bool]:
        """Which of (at most 100) users have at least one open connection."""
        answer = await self._query(self.subjects.presence_online, orjson.dumps({"users": user_ids}), timeout)
        online: dict[str, bool] = answer["online"]
        return online

    async def cluster_presence(self, timeout: float = 5.0) -> dict[str, Any]:
        """``{"nodes":[{"node","started_at","connections","users","rooms"}],"totals":{"nodes","connections"}}``."""
        return await self._query(self.subjects.presence_cluster, b"", timeout)

    async def _query(self, subject: str, body: bytes, timeout: float) -> dict[str, Any]:
        msg = await self.nc.request(subject, body, timeout=timeout)
        answer: dict[str, Any] = orjson.loads(msg.data)
        if "error" in answer:
            raise PresenceQueryError(str(answer["error"]), str(answer.get("message", "")))
        return answer


def _answer(msg: Msg) -> list[dict[str, Any]]:
    """A receipt or control reply as a one-item list; a history stream's JetStream acknowledgement
    (``{"stream","seq"}``, on a recoverable room or user) is not one: an empty list."""
    answer: dict[str, Any] = orjson.loads(msg.data)
    return [] if "stream" in answer and "seq" in answer else [answer]


class PresenceQueryError(Exception):
    """A presence query the gateway refused (bad name, bad body) or could not answer."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
