"""Helpers for the notification tests: a client's notifications, metric values, stream state."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson

from notification_service.service import NotifyService
from shared.client import PrismClient
from shared.errors import ConnectionLost


async def next_notification(client: PrismClient, timeout: float = 10.0) -> dict[str, Any]:
    """The next notification frame the client receives (other deliveries are skipped)."""
    while True:
        frame = orjson.loads(await client.receive(timeout))
        if isinstance(frame, dict) and frame.get("type") == "notification":
            return frame


async def notifications(client: PrismClient, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    return [await next_notification(client, timeout) for _ in range(count)]


def metric(service: NotifyService, name: str, **labels: str) -> float:
    value = service.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def stream_messages(js: Any, stream: str) -> int:
    info = await js.stream_info(stream)
    return int(info.state.messages)


async def holds(js: Any, stream: str, count: int) -> bool:
    """Whether ``stream`` holds exactly ``count`` messages (for :func:`tests.helpers.eventually`)."""
    return await stream_messages(js, stream) == count


class Collector:
    """Reads every notification a client receives, in the background."""

    def __init__(self, client: PrismClient) -> None:
        self.client = client
        self.ids: list[str] = []
        self._task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionLost):
            async for frame in self.client:
                body = orjson.loads(frame)
                if isinstance(body, dict) and body.get("type") == "notification":
                    self.ids.append(body["id"])

    @property
    def unique(self) -> set[str]:
        return set(self.ids)

    @property
    def duplicates(self) -> int:
        return len(self.ids) - len(self.unique)

    async def close(self) -> None:
        await self.client.close()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self._task, 5)
