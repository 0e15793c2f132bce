"""The flusher's write scheduling: one write per connection per loop pass, and passes skipped while the
NATS connection holds a backlog (at most MAX_DEFERRED_PASSES of them)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from websockets.protocol import State

from gateway.io.outbox import MAX_DEFERRED_PASSES, Flusher, LocalConn, Outgoing


class RecordingConnection:
    """What the Flusher uses of a :class:`gateway.io.websocket.WsConnection`."""

    def __init__(self) -> None:
        self.state = State.OPEN
        self.writes: list[list[bytes]] = []

    def write(self, frames: list[bytes]) -> int:
        self.writes.append(list(frames))
        return 0


def conn(name: str) -> tuple[LocalConn, RecordingConnection]:
    ws = RecordingConnection()
    local = LocalConn(name, None, "/", "test", cast(Any, ws), "2026-01-01T00:00:00Z")
    local.started = True
    return local, ws


def flusher() -> tuple[Flusher, list[int]]:
    written: list[int] = []
    return Flusher(1 << 20, lambda conn: None, lambda frames, size: written.append(frames)), written


async def passes(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


async def test_frames_of_one_pass_go_out_in_one_write() -> None:
    out, written = flusher()
    a, a_transport = conn("a")
    b, b_transport = conn("b")
    out.send_payload(a, b"1", False)
    out.send_payload(a, b"2", False)
    out.send(b, Outgoing(b"3", False))
    assert a_transport.writes == []  # nothing is written until the pass ends
    await passes(2)
    assert [len(w) for w in a_transport.writes] == [2]
    assert [len(w) for w in b_transport.writes] == [1]
    assert written == [3]


async def test_a_backlog_holds_the_write_for_the_passes_that_deliver_it() -> None:
    out, _ = flusher()
    backlog = [True, True, True]
    out.backlogged = lambda: backlog.pop(0) if backlog else False
    a, transport = conn("a")
    out.send_payload(a, b"1", False)
    await passes(1)
    out.send_payload(a, b"2", False)  # what the backlog delivered meanwhile
    await passes(1)
    out.send_payload(a, b"3", False)
    await passes(3)
    assert [len(w) for w in transport.writes] == [3]


async def test_a_backlog_that_never_ends_delays_a_write_by_a_bounded_number_of_passes() -> None:
    out, _ = flusher()
    asked = 0

    def always() -> bool:
        nonlocal asked
        asked += 1
        return True

    out.backlogged = always
    a, transport = conn("a")
    out.send_payload(a, b"1", False)
    await passes(MAX_DEFERRED_PASSES + 2)
    assert len(transport.writes) == 1
    assert asked == MAX_DEFERRED_PASSES
    out.send_payload(a, b"2", False)  # the next write may wait as long again, no longer
    await passes(MAX_DEFERRED_PASSES + 2)
    assert len(transport.writes) == 2


async def test_flush_writes_at_once_and_the_pass_it_overtook_writes_nothing_twice() -> None:
    out, _ = flusher()
    out.backlogged = lambda: True
    a, transport = conn("a")
    out.send_payload(a, b"1", False)
    out.flush()
    assert transport.writes == [[transport.writes[0][0]]]
    await passes(MAX_DEFERRED_PASSES + 2)
    assert len(transport.writes) == 1


async def test_after_write_callbacks_run_once_the_frames_are_written() -> None:
    out, _ = flusher()
    deferred = [True]
    out.backlogged = lambda: deferred.pop() if deferred else False
    a, transport = conn("a")
    seen: list[int] = []
    out.send_payload(a, b"1", False)
    out.after_write(lambda: seen.append(len(transport.writes)))
    await passes(1)
    assert seen == []  # the write is still waiting for the backlog
    await passes(2)
    assert seen == [1]
