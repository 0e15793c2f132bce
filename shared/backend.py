"""Helpers for backend services that reach clients through Prism over NATS (nats-py).

Everything here is a plain NATS publish or request on the subjects in :mod:`shared.subjects`; any NATS
client in any language can do the same (see ``docs/protocol.md``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from shared import headers as h
from shared.subjects import Subjects


class PrismBackend:
    def __init__(self, nc: NatsClient, subjects: Subjects | None = None) -> None:
        self.nc = nc
        self.subjects = subjects or Subjects()

    async def publish(self, subject: str, payload: bytes | str, *, binary: bool = False) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        await self.nc.publish(subject, data, headers={h.FRAME: h.FRAME_BINARY} if binary else None)

    async def to_conn(self, conn_id: str, payload: bytes | str, *, binary: bool = False) -> None:
        await self.publish(self.subjects.conn(conn_id), payload, binary=binary)

    async def to_user(self, user_id: str, payload: bytes | str, *, binary: bool = False) -> None:
        await self.publish(self.subjects.user(user_id), payload, binary=binary)

    async def to_room(self, room: str, payload: bytes | str, *, binary: bool = False) -> None:
        await self.publish(self.subjects.room(room), payload, binary=binary)

    async def deliver(
        self, subject: str, payload: bytes | str, *, binary: bool = False, wait: float = 0.5
    ) -> list[dict[str, Any]]:
        """Publish with a reply subject and collect every node's receipt for ``wait`` seconds.

        Raises ``nats.errors.NoRespondersError`` when nobody holds the target (e.g. a gone connection).
        For ``conn.`` subjects exactly one node answers, so this returns as soon as it has.
        """
        data = payload.encode() if isinstance(payload, str) else payload
        inbox = self.nc.new_inbox()
        receipts: list[dict[str, Any]] = []
        first: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()

        async def on_reply(msg: Msg) -> None:
            if not first.done():
                first.set_result(msg)
            if not (msg.headers and msg.headers.get(h.STATUS)):
                receipts.append(orjson.loads(msg.data))

        sub = await self.nc.subscribe(inbox, cb=on_reply)
        try:
            headers = {h.FRAME: h.FRAME_BINARY} if binary else None
            await self.nc.publish(subject, data, reply=inbox, headers=headers)
            msg = await asyncio.wait_for(
                first, wait if not subject.startswith(self.subjects.prefix + "conn.") else max(wait, 5.0)
            )
            if msg.headers and msg.headers.get(h.STATUS) == "503":
                import nats.errors

                raise nats.errors.NoRespondersError
            if not subject.startswith(self.subjects.prefix + "conn."):
                await asyncio.sleep(wait)  # receipts from other nodes keep arriving during the window
        except TimeoutError:
            pass
        finally:
            await sub.unsubscribe()
        return receipts

    async def control(self, subject: str, body: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        msg = await self.nc.request(subject, orjson.dumps(body), timeout=timeout)
        answer: dict[str, Any] = orjson.loads(msg.data)
        return answer

    async def close_conn(self, conn_id: str, code: int = 4500, reason: str = "closed by backend") -> Any:
        return await self.control(
            self.subjects.control_conn(conn_id, "close"), {"code": code, "reason": reason}
        )

    async def close_user(self, user_id: str, code: int = 4500, reason: str = "closed by backend") -> Any:
        return await self.control(
            self.subjects.control_user(user_id, "close"), {"code": code, "reason": reason}
        )

    async def join(self, conn_id: str, room: str) -> Any:
        return await self.control(self.subjects.control_conn(conn_id, "join"), {"room": room})

    async def leave(self, conn_id: str, room: str) -> Any:
        return await self.control(self.subjects.control_conn(conn_id, "leave"), {"room": room})
