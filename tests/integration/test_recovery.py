"""Missed-message recovery with real nodes, a real nats-server and raw WebSocket clients: what the frames
say, that a client gets exactly what it missed on any node, and that the node repairs what its live feed
lost. (The SDKs doing all of it on their own: test_client_recovery.py; faults: tests/cluster.)"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from typing import Any

import nats
import nats.js.errors
import orjson
import pytest
from nats.aio.client import Client as NatsClient
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gateway.core.hub import Scope
from gateway.node import Node
from shared import frames
from shared.backend import PrismBackend
from tests.conftest import NodeFactory, ws_url
from tests.helpers import eventually

RECOVER = {
    "recover_rooms": ("lobby", "game"),
    "recover_users": ("*",),
    "recover_storage": "memory",
    "recover_sync": 0.5,
}
ROOMS = "RECOVERY_ROOMS"


@dataclass(frozen=True)
class Got:
    """A delivery as the client saw it: with its position if a ``pos`` frame preceded it."""

    payload: str | bytes
    key: str | None = None
    name: str | None = None
    seq: int | None = None


class Client:
    """A raw WebSocket client that pairs ``pos`` frames with the delivery after them and keeps every
    gateway frame it got, in order."""

    def __init__(self, ws: ClientConnection, welcome: dict[str, Any]) -> None:
        self.ws = ws
        self.welcome = welcome
        self.frames: list[dict[str, Any]] = []
        self.deliveries: list[Got] = []
        self._refs = itertools.count(1)
        self._answers: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def connect(cls, node: Node, **query: str) -> Client:
        ws = await connect(ws_url(node, **query), compression=None)
        return cls(ws, orjson.loads(await asyncio.wait_for(ws.recv(), 10)))

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):  # a node stopped at the end of a test
            await self._read_frames()

    async def _read_frames(self) -> None:
        position: dict[str, Any] | None = None
        async for message in self.ws:
            if frames.is_prism_frame(message):
                frame = orjson.loads(message)
                self.frames.append(frame)
                if frame["prism"] == "pos":
                    position = frame
                future = self._answers.pop(frame.get("ref"), None) if "ref" in frame else None
                if future is not None:
                    future.set_result(frame)
                continue
            if position is None:
                self.deliveries.append(Got(message))
            else:
                key = "room" if "room" in position else "user"
                self.deliveries.append(Got(message, key, position[key], position["seq"]))
                position = None

    async def join(self, room: str, **fields: Any) -> dict[str, Any]:
        ref = next(self._refs)
        future = self._answers[ref] = asyncio.get_running_loop().create_future()
        await self.ws.send(orjson.dumps({"prism": "join", "room": room, "ref": ref, **fields}).decode())
        return await asyncio.wait_for(future, 10)

    async def leave(self, room: str) -> dict[str, Any]:
        ref = next(self._refs)
        future = self._answers[ref] = asyncio.get_running_loop().create_future()
        await self.ws.send(frames.leave(room, ref).decode())
        return await asyncio.wait_for(future, 10)

    def recoveries(self, **match: Any) -> list[dict[str, Any]]:
        found = [f for f in self.frames if f["prism"] == "recovery"]
        return [f for f in found if all(f.get(k) == v for k, v in match.items())]

    def payloads(self, name: str | None = None) -> list[str | bytes]:
        return [d.payload for d in self.deliveries if name is None or d.name == name]

    def last_seq(self, name: str) -> int:
        """The client's position in ``name``: the last ``pos`` or ``mark`` frame, else the recovery frame."""
        seq = 0
        for frame in self.frames:
            if frame.get("room", frame.get("user")) == name and frame["prism"] in ("pos", "mark", "recovery"):
                seq = frame.get("seq", seq)
        return seq

    async def wait_for(self, count: int, name: str | None = None, timeout: float = 10) -> list[str | bytes]:
        await eventually(lambda: len(self.payloads(name)) >= count, timeout, f"{count} deliveries")
        return self.payloads(name)

    async def close(self) -> None:
        await self.ws.close()
        await self._reader


async def publish_all(nc: NatsClient, subject: str, payloads: list[str]) -> None:
    """JetStream publishes: once each returns, the message is stored."""
    js = nc.jetstream()
    for payload in payloads:
        await js.publish(subject, payload.encode())


async def test_a_recover_join_says_where_positions_start_and_live_messages_carry_them(
    make_node: NodeFactory, nc: NatsClient
) -> None:
    node = await make_node(**RECOVER)
    client = await Client.connect(node)
    answer = await client.join("lobby", recover=True)
    assert answer == {"prism": "ok", "ref": 1}
    (recovery,) = client.recoveries(room="lobby")
    assert recovery["recoverable"] is True
    assert (recovery["recovering"], recovery["recovered"]) == (False, False)
    assert isinstance(recovery["epoch"], str)
    assert isinstance(recovery["seq"], int)
    await publish_all(nc, "room.lobby", ["one", "two"])
    await nc.publish("room.lobby", b"\x00\xffbinary", headers={"Prism-Frame": "binary"})
    await client.wait_for(3)
    one, two, binary = client.deliveries
    assert (one.payload, one.key, one.name) == ("one", "room", "lobby")
    assert one.seq is not None
    assert two.seq is not None
    assert recovery["seq"] < one.seq < two.seq
    assert binary.payload == b"\x00\xffbinary"  # a binary frame, unchanged
    await client.close()


async def test_a_room_without_history_says_so_and_delivers_as_before(
    make_node: NodeFactory, backend: PrismBackend
) -> None:
    node = await make_node(**RECOVER)
    client = await Client.connect(node)
    await client.join("plain", recover=True)
    assert client.recoveries(room="plain") == [{"prism": "recovery", "room": "plain", "recoverable": False}]
    receipts = await backend.deliver("room.plain", "hello")
    assert receipts == [{"node": node.node_id, "delivered": 1}]  # no JetStream ack: not stored
    assert await client.wait_for(1) == ["hello"]
    assert client.deliveries[0].seq is None
    await client.close()


async def test_without_recover_a_recoverable_room_delivers_the_bytes_alone(
    make_node: NodeFactory, nc: NatsClient
) -> None:
    node = await make_node(**RECOVER)
    plain = await Client.connect(node)
    recovering = await Client.connect(node)
    await plain.join("lobby")
    await recovering.join("lobby", recover=True)
    await publish_all(nc, "room.lobby", ['{"n":1}'])
    assert await plain.wait_for(1) == ['{"n":1}']
    await recovering.wait_for(1)
    assert [f["prism"] for f in plain.frames] == ["ok"]  # no recovery frame, no pos frame
    assert recovering.deliveries[0].seq is not None
    await plain.close()
    await recovering.close()


async def test_a_client_that_returns_to_another_node_gets_exactly_what_it_missed(
    make_node: NodeFactory, nc: NatsClient
) -> None:
    first, second = await make_node(**RECOVER), await make_node(**RECOVER)
    client = await Client.connect(first)
    await client.join("lobby", recover=True)
    await publish_all(nc, "room.lobby", ["a", "b"])
    await client.wait_for(2)
    epoch = client.recoveries(room="lobby")[0]["epoch"]
    seq = client.last_seq("lobby")
    await client.close()
    await publish_all(nc, "room.lobby", ["c", "d", "e"])  # missed
    await publish_all(nc, "room.game", ["other room"])
    back = await Client.connect(second)
    assert (await back.join("lobby", recover=True, epoch=epoch, seq=seq))["prism"] == "ok"
    (recovery,) = back.recoveries(room="lobby")
    assert (recovery["recovering"], recovery["recovered"], recovery["seq"]) == (True, True, seq)
    # The missed ones come before the ok; then live messages follow them.
    assert back.payloads() == ["c", "d", "e"]
    await publish_all(nc, "room.lobby", ["f"])
    assert await back.wait_for(4) == ["c", "d", "e", "f"]
    seqs = [d.seq or 0 for d in back.deliveries]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 4
    await back.close()


async def test_a_position_older_than_the_history_is_told_it_lost_messages(
    make_node: NodeFactory, nc: NatsClient
) -> None:
    node = await make_node(**{**RECOVER, "recover_history": 3})
    client = await Client.connect(node)
    await client.join("lobby", recover=True)
    await publish_all(nc, "room.lobby", ["a"])
    await client.wait_for(1)
    epoch, seq = client.recoveries(room="lobby")[0]["epoch"], client.last_seq("lobby")
    await client.close()
    await publish_all(nc, "room.lobby", ["b", "c", "d", "e"])  # four missed, three kept
    back = await Client.connect(node)
    await back.join("lobby", recover=True, epoch=epoch, seq=seq)
    (recovery,) = back.recoveries(room="lobby")
    assert (recovery["recovering"], recovery["recovered"]) == (True, False)
    assert back.payloads() == ["c", "d", "e"]  # what the history still has, after the warning
    await back.close()


async def test_a_position_from_another_epoch_starts_afresh_and_says_so(
    make_node: NodeFactory, nc: NatsClient
) -> None:
    node = await make_node(**RECOVER)
    await publish_all(nc, "room.lobby", ["old"])
    client = await Client.connect(node)
    await client.join("lobby", recover=True, epoch="elsewhere", seq=1)
    (recovery,) = client.recoveries(room="lobby")
    assert (recovery["recovering"], recovery["recovered"]) == (True, False)
    assert recovery["epoch"] != "elsewhere"
    await publish_all(nc, "room.lobby", ["new"])
    assert await client.wait_for(1) == ["new"]  # nothing from before the join
    await client.close()


async def test_the_user_stream_recovers_from_the_query_and_keeps_what_came_on_connect(
    make_node: NodeFactory, nc: NatsClient
) -> None:
    first, second = await make_node(**RECOVER), await make_node(**RECOVER)
    greeted = asyncio.Event()

    async def greet(msg: Any) -> None:  # a backend that writes to every user as it connects
        user = orjson.loads(msg.data)["user"]
        await nc.jetstream().publish(f"user.{user}", b"welcome back")
        greeted.set()

    await nc.subscribe("client.connect", cb=greet)
    client = await Client.connect(first, user="alice", recover="user")
    assert await client.wait_for(1) == ["welcome back"]  # published after the connect, not missed
    (recovery,) = client.recoveries(user="alice")
    assert recovery["recovering"] is False
    epoch, seq = recovery["epoch"], client.last_seq("alice")
    await client.close()
    await publish_all(nc, "user.alice", ["while away"])
    back = await Client.connect(second, user="alice", recover="user", user_epoch=epoch, user_seq=str(seq))
    assert await back.wait_for(2) == ["while away", "welcome back"]
    assert back.recoveries(user="alice")[0]["recovered"] is True
    await back.close()


async def test_anonymous_and_unrecoverable_user_streams_say_so(make_node: NodeFactory) -> None:
    node = await make_node(**{**RECOVER, "recover_users": ("bob",)})
    anonymous = await Client.connect(node, recover="user")
    alice = await Client.connect(node, user="alice", recover="user")
    await eventually(lambda: anonymous.frames and alice.frames, what="the recovery frames")
    assert anonymous.frames == [{"prism": "recovery", "user": None, "recoverable": False}]
    assert alice.frames == [{"prism": "recovery", "user": "alice", "recoverable": False}]
    await anonymous.close()
    await alice.close()


@pytest.mark.parametrize(
    ("query", "body"),
    [
        ("recover=room", "invalid recover: recover must be 'user'"),
        ("recover=user&user_epoch=abc", "invalid recover: give user_epoch and user_seq together, once each"),
        ("user_epoch=abc&user_seq=1", "invalid recover: user_epoch and user_seq need recover=user"),
    ],
)
async def test_a_bad_recover_query_is_refused_before_the_upgrade(
    make_node: NodeFactory, query: str, body: str
) -> None:
    node = await make_node(**RECOVER)
    request = urllib.request.Request(
        f"http://127.0.0.1:{node.port}/ws?{query}",
        headers={"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                 "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="},
    )  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as refused:
        await asyncio.to_thread(urllib.request.urlopen, request, timeout=5)
    assert refused.value.code == 400
    assert refused.value.read().decode().strip() == body


async def test_a_malformed_recover_join_is_an_error_frame(make_node: NodeFactory) -> None:
    node = await make_node(**RECOVER)
    client = await Client.connect(node)
    answer = await client.join("lobby", recover=True, epoch="abc")
    assert answer == {
        "prism": "error",
        "ref": 1,
        "code": "invalid_position",
        "message": "epoch and seq go together",
    }
    await client.close()


async def test_on_a_recoverable_room_the_one_answer_is_the_jetstream_ack(
    make_node: NodeFactory, nc: NatsClient
) -> None:
    plain_node, recovering_node = await make_node(**RECOVER), await make_node(**RECOVER)
    plain = await Client.connect(plain_node)
    recovering = await Client.connect(recovering_node)
    await plain.join("lobby")
    await recovering.join("lobby", recover=True)
    replies: asyncio.Queue[Any] = asyncio.Queue()
    barrier: asyncio.Queue[Any] = asyncio.Queue()
    inbox, barrier_inbox = nc.new_inbox(), nc.new_inbox()
    await nc.subscribe(inbox, cb=replies.put)
    await nc.subscribe(barrier_inbox, cb=barrier.put)
    await nc.publish("room.lobby", b"hi", reply=inbox)
    answer = orjson.loads((await asyncio.wait_for(replies.get(), 5)).data)
    assert answer["stream"] == ROOMS  # stored
    await plain.wait_for(1)
    await recovering.wait_for(1)
    # A barrier: the plain node answers this after anything it would have sent for the lobby.
    await plain.join("plain")
    await nc.publish("room.plain", b"barrier", reply=barrier_inbox)
    assert orjson.loads((await asyncio.wait_for(barrier.get(), 5)).data)["node"] == plain_node.node_id
    assert replies.empty()  # no receipt for the lobby: a JetStream publisher takes the first answer
    # So a JetStream publish with plain members online never reads a receipt as its ack.
    for n in range(50):
        ack = await nc.jetstream().publish("room.lobby", str(n).encode())
        assert ack.stream == ROOMS
    await plain.close()
    await recovering.close()


async def test_a_backend_leave_stops_a_recovering_member(
    make_node: NodeFactory, nc: NatsClient, backend: PrismBackend
) -> None:
    node = await make_node(**RECOVER)
    client = await Client.connect(node)
    await client.join("lobby", recover=True)
    await client.join("game", recover=True)
    assert (await backend.leave(client.welcome["conn"], "lobby"))["ok"] is True
    await publish_all(nc, "room.lobby", ["not for you"])
    await publish_all(nc, "room.game", ["barrier"])
    assert await client.wait_for(1) == ["barrier"]
    assert client.payloads() == ["barrier"]
    assert "lobby" not in node._recovery.channels[Scope.ROOM]  # type: ignore[union-attr]
    await client.close()


def repairs(node: Node) -> float:
    value = node.registry.get_sample_value(
        "prism_recovery_repairs_total", {"node": node.node_id, "scope": "room"}
    )
    return value or 0.0


async def _without_republish(nc: NatsClient, publish: list[str]) -> None:
    """Store ``publish`` on room.lobby while the stream does not republish (as if the republished copies
    were lost on their way to the node), then republish again."""
    js = nc.jetstream()
    info = await js.stream_info(ROOMS)
    await js.update_stream(replace(info.config, republish=None))
    await publish_all(nc, "room.lobby", publish)
    await js.update_stream(info.config)


async def test_a_lost_live_message_is_repaired_from_the_history_when_the_next_one_names_it(
    make_node: NodeFactory, nc: NatsClient
) -> None:
    node = await make_node(**{**RECOVER, "recover_sync": 60.0, "recover_ttl": 300.0})
    client = await Client.connect(node)
    await client.join("lobby", recover=True)
    await publish_all(nc, "room.lobby", ["1"])
    await client.wait_for(1)
    await _without_republish(nc, ["2", "3"])
    await publish_all(nc, "room.lobby", ["4"])
    assert await client.wait_for(4) == ["1", "2", "3", "4"]
    assert [f for f in client.frames if f["prism"] == "recovery"][1:] == []  # nothing was lost
    assert repairs(node) == 1
    await client.close()


async def test_a_lost_last_message_is_caught_by_the_periodic_check(
    make_node: NodeFactory, nc: NatsClient
) -> None:
    node = await make_node(**RECOVER)  # recover_sync 0.5 s
    client = await Client.connect(node)
    await client.join("lobby", recover=True)
    await _without_republish(nc, ["only in the history"])
    assert await client.wait_for(1, timeout=15) == ["only in the history"]
    assert repairs(node) == 1
    await client.close()


async def test_quiet_positions_move_forward_so_they_stay_inside_the_history(
    make_node: NodeFactory, nc: NatsClient
) -> None:
    node = await make_node(**{**RECOVER, "recover_ttl": 2.0, "recover_sync": 0.25})
    quiet = await Client.connect(node)
    await quiet.join("lobby", recover=True)
    js = nc.jetstream()
    start: int = quiet.recoveries(room="lobby")[0]["seq"]
    await publish_all(nc, "room.game", ["busy"] * 5)  # other rooms move the stream on

    def marked() -> bool:
        return quiet.last_seq("lobby") > start + 5

    await eventually(marked, what="a mark past the other room's messages")
    epoch, seq = quiet.recoveries(room="lobby")[0]["epoch"], quiet.last_seq("lobby")
    await quiet.close()

    async def aged_out() -> bool:  # every message up to the old position is gone from the stream
        first: int = (await js.stream_info(ROOMS)).state.first_seq
        return first > start + 1

    await eventually(aged_out, timeout=15, what="the busy messages to age out")
    back = await Client.connect(node)
    await back.join("lobby", recover=True, epoch=epoch, seq=seq)
    assert back.recoveries(room="lobby")[0]["recovered"] is True
    await back.close()


async def test_a_recreated_stream_moves_everyone_to_the_new_epoch_and_says_so(
    make_node: NodeFactory, nc: NatsClient
) -> None:
    node = await make_node(**RECOVER)
    client = await Client.connect(node)
    await client.join("lobby", recover=True)
    old_epoch = client.recoveries(room="lobby")[0]["epoch"]
    await nc.jetstream().delete_stream(ROOMS)

    def told() -> bool:
        return any(f["epoch"] != old_epoch for f in client.recoveries(room="lobby"))

    await eventually(told, timeout=15, what="a recovery frame with the new epoch")
    notice = client.recoveries(room="lobby")[-1]
    assert (notice["recovering"], notice["recovered"], notice["seq"]) == (True, False, 0)
    await publish_all(nc, "room.lobby", ["after"])
    assert await client.wait_for(1) == ["after"]
    await client.close()


async def test_positions_need_no_more_than_jetstream_so_any_nats_client_can_check_them(
    nats_server: Any, make_node: NodeFactory
) -> None:
    """What a client's position means can be read back with the plain JetStream API."""
    node = await make_node(**RECOVER)
    client = await Client.connect(node)
    await client.join("lobby", recover=True)
    nc = await nats.connect(nats_server.url)
    await publish_all(nc, "room.lobby", ["x"])
    (got,) = await client.wait_for(1)
    assert got == "x"
    seq = client.deliveries[0].seq
    assert seq is not None
    stored = await nc.jetstream().get_msg(ROOMS, seq)
    assert (stored.subject, stored.data) == ("room.lobby", b"x")
    await nc.close()
    await client.close()


async def test_the_backend_helpers_on_a_recoverable_room(
    make_node: NodeFactory, backend: PrismBackend
) -> None:
    node = await make_node(**RECOVER)
    client = await Client.connect(node)
    await client.join("lobby", recover=True)
    first = await backend.store("room.lobby", "stored", msg_id="m-1")
    again = await backend.store("room.lobby", "stored", msg_id="m-1")  # a retry: stored once
    assert again == first
    assert await backend.deliver("room.lobby", "no receipts here", window=0.05) == []
    assert await client.wait_for(2) == ["stored", "no receipts here"]
    with pytest.raises(nats.js.errors.NoStreamResponseError):
        await backend.store("room.plain", "not recoverable")
    await client.close()
