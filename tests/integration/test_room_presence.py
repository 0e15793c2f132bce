"""Room presence events with real nodes, a real nats-server and raw WebSocket clients.

"Nothing happened" is never asserted by waiting: a later event that must come after it (another user's
leave, a backend message) is the barrier.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import orjson
from nats.aio.client import Client as NatsClient
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gateway.node import Node
from shared import frames
from shared import presence_keys as keys
from shared.backend import PrismBackend
from shared.presence import PresenceReader
from tests.conftest import NodeFactory, ws_url
from tests.helpers import eventually
from tests.presence_support import put_keys

FAST = {"presence_batch": 0.05}


class Member:
    """A WebSocket client that records the presence frames it gets and keeps its view of each room."""

    def __init__(self, ws: ClientConnection, welcome: dict[str, Any]) -> None:
        self.ws = ws
        self.conn_id: str = welcome["conn"]
        self.presence: list[dict[str, Any]] = []
        self.views: dict[str, set[str]] = {}
        self.deliveries: asyncio.Queue[str | bytes] = asyncio.Queue()
        self._oks: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._refs = itertools.count(1)
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def connect(cls, node: Node, user: str | None = None) -> Member:
        ws = await connect(ws_url(node, **({"user": user} if user else {})), compression=None)
        return cls(ws, orjson.loads(await asyncio.wait_for(ws.recv(), 10)))

    async def _command(self, build: bytes, ref: int) -> None:
        future = self._oks[ref] = asyncio.get_running_loop().create_future()
        await self.ws.send(build, text=True)
        answer = await asyncio.wait_for(future, 10)
        assert answer["prism"] == "ok", answer

    async def join(self, room: str) -> None:
        ref = next(self._refs)
        await self._command(frames.join(room, ref), ref)

    async def leave(self, room: str) -> None:
        ref = next(self._refs)
        await self._command(frames.leave(room, ref), ref)
        self.views.pop(room, None)  # a member again later gets a fresh snapshot

    async def close(self) -> None:
        await self.ws.close()
        await self.wait_closed()

    async def wait_closed(self) -> int | None:
        await asyncio.wait_for(asyncio.gather(self._reader, return_exceptions=True), 10)
        return self.ws.close_code

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                if not frames.is_prism_frame(message):
                    await self.deliveries.put(message)
                    continue
                frame = orjson.loads(message)
                if frame["prism"] == "ok":
                    self._oks.pop(frame["ref"]).set_result(frame)
                elif frame["prism"] == "presence":
                    self._apply(frame)
                else:
                    raise AssertionError(f"unexpected frame {frame}")
        except ConnectionClosed:
            pass

    def _apply(self, frame: dict[str, Any]) -> None:
        assert next(iter(frame)) == "prism"
        self.presence.append(frame)
        room = frame["room"]
        if "members" in frame:
            assert room not in self.views, f"second snapshot of {room}"
            self.views[room] = set(frame["members"])
            return
        view = self.views[room]  # a diff never comes before the snapshot
        assert frame.get("joined") or frame.get("left"), frame
        assert not view & set(frame.get("joined", [])), frame
        assert set(frame.get("left", [])) <= view, frame
        view |= set(frame.get("joined", []))
        view -= set(frame.get("left", []))

    def mentions(self, user: str) -> list[dict[str, Any]]:
        return [
            f for f in self.presence if user in f.get("joined", []) + f.get("left", []) + f.get("members", [])
        ]

    def sees(self, room: str, *users: str) -> bool:
        return self.views.get(room) == set(users)


async def test_a_joiner_gets_a_snapshot_that_lists_itself_and_the_others(make_node: NodeFactory) -> None:
    node = await make_node(room_presence=("lobby",), **FAST)
    alice = await Member.connect(node, "alice")
    await alice.join("lobby")
    await eventually(lambda: alice.presence, what="alice's snapshot")
    assert alice.presence == [{"prism": "presence", "room": "lobby", "members": ["alice"]}]
    bob = await Member.connect(node, "bob")
    await bob.join("lobby")
    await eventually(lambda: bob.presence, what="bob's snapshot")
    assert bob.presence == [{"prism": "presence", "room": "lobby", "members": ["alice", "bob"]}]
    await eventually(lambda: alice.sees("lobby", "alice", "bob"), what="alice told of bob")
    assert alice.presence[1] == {"prism": "presence", "room": "lobby", "joined": ["bob"]}
    # An anonymous member is counted nowhere: it gets the list, and nobody hears of it.
    anon = await Member.connect(node)
    await anon.join("lobby")
    await eventually(lambda: anon.sees("lobby", "alice", "bob"), what="the anonymous snapshot")
    carol = await Member.connect(node, "carol")
    await carol.join("lobby")
    await eventually(lambda: alice.sees("lobby", "alice", "bob", "carol"), what="carol's join (barrier)")
    assert len(alice.presence) == 3
    for member in (alice, bob, anon, carol):
        await member.close()


async def test_a_backend_join_gets_a_snapshot_and_a_rejoin_a_fresh_one(
    make_node: NodeFactory, backend: PrismBackend
) -> None:
    node = await make_node(room_presence=("lobby",), presence_debounce=0.1, **FAST)
    alice = await Member.connect(node, "alice")
    await alice.join("lobby")
    bob = await Member.connect(node, "bob")
    assert (await backend.join(bob.conn_id, "lobby"))["ok"] is True
    await eventually(lambda: bob.sees("lobby", "alice", "bob"), what="bob's snapshot after a control join")
    await eventually(lambda: alice.sees("lobby", "alice", "bob"), what="alice told of bob")
    told = len(alice.presence)
    await alice.leave("lobby")
    await eventually(lambda: bob.sees("lobby", "bob"), what="alice's leave")
    carol = await Member.connect(node, "carol")
    await carol.join("lobby")
    await eventually(lambda: bob.sees("lobby", "bob", "carol"), what="carol's join")
    assert len(alice.presence) == told  # nothing since she left
    await alice.join("lobby")
    await eventually(lambda: alice.sees("lobby", "alice", "bob", "carol"), what="alice's fresh snapshot")
    assert alice.presence[-1] == {"prism": "presence", "room": "lobby", "members": ["alice", "bob", "carol"]}
    for member in (alice, bob, carol):
        await member.close()


async def test_joins_and_leaves_reach_members_on_every_node_alike(make_node: NodeFactory) -> None:
    settings = {"room_presence": ("lobby",), "presence_debounce": 0.3, **FAST}
    one, two = await make_node(**settings), await make_node(**settings)
    alice = await Member.connect(one, "alice")
    await alice.join("lobby")
    bob = await Member.connect(two, "bob")
    await bob.join("lobby")
    carol = await Member.connect(two, "carol")
    await carol.join("lobby")
    for member in (alice, bob, carol):
        await eventually(lambda m=member: m.sees("lobby", "alice", "bob", "carol"), what="all three")
    await bob.leave("lobby")
    for member in (alice, carol):
        await eventually(lambda m=member: m.sees("lobby", "alice", "carol"), what="bob's leave")
    for member in (alice, carol):
        assert member.presence[-1] == {"prism": "presence", "room": "lobby", "left": ["bob"]}
    await carol.close()
    await eventually(lambda: alice.sees("lobby", "alice"), what="carol's leave")
    assert alice.presence[-1] == {"prism": "presence", "room": "lobby", "left": ["carol"]}
    assert bob.mentions("carol")  # bob, no longer a member, heard nothing of it
    assert not [f for f in bob.presence if "carol" in f.get("left", [])]
    await alice.close()
    await bob.close()


async def test_a_leave_is_announced_only_after_the_debounce(make_node: NodeFactory) -> None:
    node = await make_node(room_presence=("lobby",), presence_debounce=0.5, **FAST)
    alice = await Member.connect(node, "alice")
    await alice.join("lobby")
    bob = await Member.connect(node, "bob")
    await bob.join("lobby")
    await eventually(lambda: alice.sees("lobby", "alice", "bob"), what="bob's join")
    before = time.monotonic()
    await bob.leave("lobby")
    await eventually(lambda: alice.sees("lobby", "alice"), what="bob's leave")
    assert time.monotonic() - before >= 0.5
    assert alice.presence[-1] == {"prism": "presence", "room": "lobby", "left": ["bob"]}
    await alice.close()
    await bob.close()


async def _reconnect_case(make_node: NodeFactory, nc: NatsClient, drain_node: bool) -> None:
    settings = {"room_presence": ("lobby",), "presence_debounce": 2.0, **FAST}
    one, two = await make_node(**settings), await make_node(**settings)
    registry = await PresenceReader.open(nc)
    watcher = await Member.connect(two, "watcher")
    await watcher.join("lobby")
    alice = await Member.connect(one, "alice")
    await alice.join("lobby")
    dave = await Member.connect(two, "dave")
    await dave.join("lobby")
    await eventually(lambda: watcher.sees("lobby", "watcher", "alice", "dave"), what="everyone")
    seen = len(watcher.presence)
    if drain_node:
        await one.stop()  # asks alice to reconnect (1012) and removes her keys before it returns
        assert await alice.wait_closed() == 1012
    else:
        await alice.close()

    async def alice_gone() -> bool:
        return alice.conn_id not in await registry.room_members("lobby")

    await eventually(alice_gone, what="alice's membership key purged")
    # Erin's join comes after alice's purge in the bucket, so the frame announcing it is flushed after
    # the watcher's node saw alice go: a leave of alice without debounce would be in it, or before it.
    erin = await Member.connect(two, "erin")
    await erin.join("lobby")
    await eventually(lambda: "erin" in watcher.views["lobby"], what="erin's join")
    # Dave leaves for good *after* alice went: his leave can only be announced after alice's would be.
    await dave.close()
    alice = await Member.connect(two, "alice")
    await alice.join("lobby")
    await eventually(lambda: "dave" not in watcher.views["lobby"], what="dave's leave (the barrier)")
    assert watcher.presence[seen:] == [
        {"prism": "presence", "room": "lobby", "joined": ["erin"]},
        {"prism": "presence", "room": "lobby", "left": ["dave"]},
    ]
    assert watcher.sees("lobby", "watcher", "alice", "erin")
    await eventually(lambda: alice.sees("lobby", "watcher", "alice", "erin"), what="alice's new snapshot")
    for member in (watcher, alice, erin):
        await member.close()


async def test_a_reconnect_within_the_debounce_announces_nothing(
    make_node: NodeFactory, nc: NatsClient
) -> None:
    await _reconnect_case(make_node, nc, drain_node=False)


async def test_a_node_restart_whose_clients_reconnect_elsewhere_announces_nothing(
    make_node: NodeFactory, nc: NatsClient
) -> None:
    await _reconnect_case(make_node, nc, drain_node=True)


async def test_keys_removed_by_a_sweep_become_leaves(make_node: NodeFactory, nc: NatsClient) -> None:
    """The registry is the source of truth: a member on a node that died shows up, and leaves when a
    survivor's sweep removes its keys (a filtered purge, which the room's watch does not see: the sweep's
    announcement tells the node)."""
    node = await make_node(room_presence=("lobby",), presence_debounce=0.2, **FAST)
    ghost = {"conn": "ghost.c1", "node": "ghost", "user": "gus", "joined_at": "2025-01-15T09:30:00.000Z"}
    await put_keys(nc, {keys.room_key("lobby", "ghost.c1"): orjson.dumps(ghost)})
    alice = await Member.connect(node, "alice")
    await alice.join("lobby")
    await eventually(lambda: alice.sees("lobby", "alice", "gus"), what="the snapshot with gus")
    assert node.liveness is not None
    await node.liveness.sweep("ghost", force=True)
    await eventually(lambda: alice.sees("lobby", "alice"), what="gus's leave")
    await alice.close()


async def test_many_joins_at_once_come_as_a_few_batched_frames(make_node: NodeFactory) -> None:
    node = await make_node(room_presence=("lobby",), presence_batch=0.5)
    watcher = await Member.connect(node, "watcher")
    await watcher.join("lobby")
    await eventually(lambda: watcher.presence, what="the snapshot")
    others = [await Member.connect(node, f"u{i}") for i in range(20)]
    await asyncio.gather(*(m.join("lobby") for m in others))
    everyone = {"watcher"} | {f"u{i}" for i in range(20)}
    await eventually(lambda: watcher.views["lobby"] == everyone, what="all 20 joins")
    assert len(watcher.presence) - 1 <= 4  # a snapshot, then one frame per 0.5 s at most
    for member in [watcher, *others]:
        await member.close()


async def test_rooms_without_presence_get_no_presence_frames(
    make_node: NodeFactory, backend: PrismBackend
) -> None:
    node = await make_node(room_presence=("chat-*",), **FAST)
    alice = await Member.connect(node, "alice")
    await alice.join("quiet")
    await alice.join("chat-1")
    bob = await Member.connect(node, "bob")
    await bob.join("quiet")
    await bob.join("chat-1")
    await eventually(lambda: alice.sees("chat-1", "alice", "bob"), what="bob's join of chat-1")
    await bob.leave("quiet")
    await backend.to_room("quiet", "barrier")
    assert await asyncio.wait_for(alice.deliveries.get(), 10) == "barrier"
    assert {f["room"] for f in alice.presence} == {"chat-1"}
    assert {f["room"] for f in bob.presence} == {"chat-1"}
    await alice.close()
    await bob.close()


async def test_presence_is_off_by_default(make_node: NodeFactory, backend: PrismBackend) -> None:
    node = await make_node()
    alice = await Member.connect(node, "alice")
    await alice.join("lobby")
    bob = await Member.connect(node, "bob")
    await bob.join("lobby")
    await backend.to_room("lobby", "barrier")
    assert await asyncio.wait_for(alice.deliveries.get(), 10) == "barrier"
    assert alice.presence == []
    assert node.hub.rooms["lobby"]
    await alice.close()
    await bob.close()
