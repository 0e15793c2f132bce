"""The raw websockets ceiling as a target: publishes go over one control WebSocket (picows)."""

from __future__ import annotations

from pathlib import Path

from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from loadtest.targets.base import Publisher, ServerProcess, Target, free_port, python, wait_for_port


class _Silent(WSListener):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        return None


class ControlPublisher:
    def __init__(self, transport: WSTransport) -> None:
        self.transport = transport

    async def room(self, room: str, data: bytes) -> None:
        self.transport.send(WSMsgType.BINARY, b"R%s\n%s" % (room.encode(), data))

    async def conn(self, conn_id: str, data: bytes) -> None:
        self.transport.send(WSMsgType.BINARY, b"C%s\n%s" % (conn_id.encode(), data))

    async def user(self, user: str, data: bytes) -> None:
        self.transport.send(WSMsgType.BINARY, b"U%s\n%s" % (user.encode(), data))

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        self.transport.send_close()
        self.transport.disconnect()


class CeilingTarget(Target):
    name = "websockets-ceiling"

    def __init__(self, core: int | None = 0) -> None:
        self.port = free_port()
        self.process = ServerProcess(
            [python(), "-m", "loadtest.targets.ceiling_server", str(self.port)], core
        )

    async def start(self, workdir: Path) -> None:
        await self.process.start(workdir / "ceiling.log")
        await wait_for_port(self.port, self.process)
        self.server_pid = self.process.pid

    async def stop(self) -> None:
        await self.process.stop()

    def url(self, user: str | None = None) -> str:
        return f"ws://127.0.0.1:{self.port}/ws" + (f"?user={user}" if user else "")

    async def publisher(self) -> Publisher:
        transport, _ = await ws_connect(_Silent, f"ws://127.0.0.1:{self.port}/control")
        return ControlPublisher(transport)
