"""The Python client SDK recovering on its own: positions kept from the frames, sent again on every
rejoin and reconnect to whichever node answers, and a client restarted from a stored position."""

from __future__ import annotations

from typing import Any

from nats.aio.client import Client as NatsClient

from loadtest.targets.base import free_port
from shared.backoff import Backoff
from shared.client import ConnState, PrismClient
from shared.client.positions import Recovery
from tests.conftest import NodeFactory, ws_url
from tests.helpers import eventually

RECOVER = {"recover_rooms": ("*",), "recover_users": ("*",), "recover_storage": "memory"}


async def stored(nc: NatsClient, subject: str, *payloads: str) -> None:
    for payload in payloads:
        await nc.jetstream().publish(subject, payload.encode())


async def receive_all(client: PrismClient, count: int) -> list[str | bytes]:
    return [await client.receive(10) for _ in range(count)]


async def test_the_client_gets_what_it_missed_while_no_node_was_up_then_live(
    make_node: NodeFactory, nc: NatsClient
) -> None:
    first = await make_node(**RECOVER)
    second_port = free_port()
    recoveries: list[Recovery] = []
    client = await PrismClient.connect(
        [ws_url(first), f"ws://127.0.0.1:{second_port}/ws"],
        user="ada",
        randomize=False,
        reconnect=Backoff(base=0.02, cap=0.2),
        recover=True,
        on_recovery=recoveries.append,
    )
    await client.join("lobby", recover=True)
    await stored(nc, "room.lobby", "r1")
    await stored(nc, "user.ada", "u1")
    assert await receive_all(client, 2) == ["r1", "u1"]
    await first.stop()  # 1012: the client retries, and no node answers for now
    await eventually(lambda: client.state is ConnState.RECONNECTING, what="the client to lose its node")
    await stored(nc, "room.lobby", "r2", "r3")
    await stored(nc, "user.ada", "u2")
    await make_node(**RECOVER, port=second_port, node_id="node2")
    await client.wait_connected(20)
    assert client.node == "node2"
    got = await receive_all(client, 3)
    assert sorted(got, key=str) == ["r2", "r3", "u2"]  # rooms and user stream: each in its own order
    assert got.index("r2") < got.index("r3")
    resumed = [r for r in recoveries if r.recovering]
    assert {(r.room, r.user, r.recovered) for r in resumed} == {("lobby", None, True), (None, "ada", True)}
    await stored(nc, "room.lobby", "r4")
    assert await client.receive(10) == "r4"
    assert client.recoveries.qsize() == len(recoveries)
    await client.close()


async def test_a_new_client_resumes_from_positions_an_old_one_kept(
    make_node: NodeFactory, nc: NatsClient
) -> None:
    node = await make_node(**RECOVER)
    old = await PrismClient.connect(ws_url(node), user="bea", recover=True)
    await old.join("lobby", recover=True)
    await stored(nc, "room.lobby", "seen")
    assert await old.receive(10) == "seen"
    room, user = old.position("lobby"), old.position()
    assert room is not None
    assert user is not None
    await old.close()
    await stored(nc, "room.lobby", "missed")
    await stored(nc, "user.bea", "missed too")
    new = await PrismClient.connect(ws_url(node), user="bea", recover=user)
    await new.join("lobby", position=room)
    assert await receive_all(new, 2) == ["missed too", "missed"]  # the user stream resumes at connect
    outcomes: list[Any] = [new.recoveries.get_nowait() for _ in range(new.recoveries.qsize())]
    assert all(r.recovering and r.recovered for r in outcomes)
    position = new.position("lobby")
    assert position is not None
    assert position.seq > room.seq
    await new.close()


async def test_leaving_forgets_the_position_and_a_plain_join_gets_plain_messages(
    make_node: NodeFactory, nc: NatsClient
) -> None:
    node = await make_node(**RECOVER)
    client = await PrismClient.connect(ws_url(node))
    await client.join("lobby", recover=True)
    assert client.position("lobby") is not None
    await client.leave("lobby")
    assert client.position("lobby") is None
    await client.join("lobby")
    await stored(nc, "room.lobby", "plain")
    assert await client.receive(10) == "plain"
    assert client.position("lobby") is None
    await client.close()
