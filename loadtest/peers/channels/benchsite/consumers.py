"""One ``AsyncWebsocketConsumer`` speaking Prism's client frames, so the default dialect drives it.

``{"prism":"welcome","conn":<channel name>}`` on connect; ``{"prism":"join","room":..,"ref":..}`` adds the
channel to group ``room.<room>`` and answers ``{"prism":"ok"}``; ``{"event":..,"ref":..,"data":..}`` is
answered ``{"prism":"reply"}`` with the data. A ``?user=<id>`` query joins group ``user.<id>``.
Deliveries (``bench.deliver`` events from the channel layer) are sent as their text, unchanged.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncWebsocketConsumer  # type: ignore[import-untyped]


# channels ships no type hints (and this runs in the peer's virtualenv): the base class is Any to mypy.
class BenchConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    async def connect(self) -> None:
        self.joined: list[str] = []
        await self.accept()
        user = parse_qs(self.scope["query_string"].decode()).get("user", [""])[0]
        if user:
            await self._join(f"user.{user}")
        await self.send(text_data=json.dumps({"prism": "welcome", "conn": self.channel_name}))

    async def _join(self, group: str) -> None:
        await self.channel_layer.group_add(group, self.channel_name)
        self.joined.append(group)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        frame = json.loads(text_data or bytes_data or b"{}")
        if frame.get("prism") == "join":
            await self._join(f"room.{frame['room']}")
            await self.send(text_data=json.dumps({"prism": "ok", "ref": frame.get("ref")}))
        elif "event" in frame and "ref" in frame:
            reply = {"prism": "reply", "ref": frame["ref"], "data": frame.get("data")}
            await self.send(text_data=json.dumps(reply))

    async def bench_deliver(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["text"])

    async def disconnect(self, code: int) -> None:
        for group in self.joined:
            await self.channel_layer.group_discard(group, self.channel_name)
