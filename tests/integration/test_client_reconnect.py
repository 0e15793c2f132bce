"""The Python client SDK reconnecting against real gateway nodes: moving to another node when its node
drains, coming back when its node restarts, restoring room memberships, and not reconnecting after
terminal closes."""

from __future__ import annotations

import asyncio
from typing import Any

import nats.errors
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from websockets.exceptions import InvalidStatus

from loadtest.targets.base import free_port
from shared.backend import PrismBackend
from shared.backoff import Backoff
from shared.client import ConnState, PrismClient, StateChange
from shared.errors import ConnectFailed, ConnectionLost
from shared.nats_connection import flush_all
from tests.conftest import NodeFactory, ws_url
from tests.helpers import eventually


def fast(**kwargs: Any) -> Backoff:
    """Small delays so a test spends milliseconds, not seconds, backing off."""
    kwargs.setdefault("base", 0.02)
    kwargs.setdefault("cap", 0.2)
    return Backoff(**kwargs)


class States(list[StateChange]):
    """Records every state change a client reports."""

    def of(self, state: ConnState) -> list[StateChange]:
        return [change for change in self if change.state is state]

    def failures(self) -> list[BaseException]:
        return [change.error for change in self if change.error is not None]


def connected_to(client: PrismClient, node_id: str) -> bool:
    return client.node == node_id and client.state is ConnState.CONNECTED


async def test_client_moves_to_the_other_node_when_its_node_stops_and_rejoins_its_rooms(
    make_node: NodeFactory, backend: PrismBackend
) -> None:
    one, two = await make_node(), await make_node()
    states = States()
    client = await PrismClient.connect(
        [ws_url(one), ws_url(two)], user="ada", reconnect=fast(), randomize=False, on_state=states.append
    )
    assert connected_to(client, "node1")
    assert [c.state for c in states] == [ConnState.CONNECTING, ConnState.CONNECTED]
    await client.join("a")
    await client.join("b")
    first_conn = client.conn_id

    await one.stop()  # drains: the client is closed with 1012
    await eventually(lambda: connected_to(client, "node2"), what="the client to move to node2")
    assert client.conn_id != first_conn
    assert client.conn_id.startswith("node2.")
    assert client.welcome["conn"] == client.conn_id
    assert client.url.startswith(ws_url(two))
    assert client.user == "ada"
    assert client.reconnects == 1
    assert client.rooms == ("a", "b")
    reconnecting = states.of(ConnState.RECONNECTING)
    assert reconnecting[0].code == 1012
    assert (reconnecting[0].url or "").startswith(ws_url(two))
    assert states[-1].state is ConnState.CONNECTED

    # Both rooms were joined again before the client said "connected": deliveries reach it at once.
    for room in ("a", "b"):
        receipts = await backend.deliver(f"room.{room}", f"to {room}")
        assert receipts == [{"node": "node2", "delivered": 1}]
        assert await client.receive(5) == f"to {room}"
    await backend.to_user("ada", "by user")
    assert await client.receive(5) == "by user"
    await client.close()
    assert client.state is ConnState.CLOSED
    assert await client.wait_closed() == 1000


async def test_client_reconnects_when_its_node_restarts_on_the_same_port(
    make_node: NodeFactory, nc: NatsClient
) -> None:
    node = await make_node()
    port = node.port
    states = States()
    client = await PrismClient.connect(ws_url(node), reconnect=fast(cap=0.1), on_state=states.append)
    await client.join("lab")
    events: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_event(msg: Msg) -> None:
        await events.put(msg)

    await nc.subscribe("client.event.note", cb=on_event)
    await flush_all(nc)

    await node.stop()
    await eventually(lambda: len(states.failures()) >= 2, what="failed attempts while the node is down")
    assert client.state is ConnState.RECONNECTING
    # Refused TCP connects (and 503s while the node was still draining) are retried, never terminal.
    assert all(isinstance(e, (OSError, InvalidStatus)) for e in states.failures())
    with pytest.raises(TimeoutError):
        await client.send_event("note", "too impatient", timeout=0.01)
    waiting = asyncio.ensure_future(client.send_event("note", "sent after the restart", timeout=10))

    restarted = await make_node(port=port)
    await client.wait_connected(5)
    assert client.node == restarted.node_id == "node2"
    await waiting
    msg = await asyncio.wait_for(events.get(), 5)
    assert msg.data == b'"sent after the restart"'
    assert msg.headers is not None
    assert msg.headers["Prism-Conn"] == client.conn_id
    receipts = await PrismBackend(nc).deliver("room.lab", "back")
    assert receipts == [{"node": "node2", "delivered": 1}]
    assert await client.receive(5) == "back"
    await client.close()


async def test_a_draining_node_answering_503_is_retried_on_the_next_url(make_node: NodeFactory) -> None:
    one = await make_node(drain_seconds=1.0)
    two = await make_node()
    states = States()
    # The second URL is node1 again, so the first attempt after the drain meets node1's 503.
    urls = [ws_url(one), ws_url(one, again="1"), ws_url(two)]
    client = await PrismClient.connect(urls, reconnect=fast(), randomize=False, on_state=states.append)
    holder = await PrismClient.connect(ws_url(one))  # closed half a second later: node1 stays draining
    drain = asyncio.ensure_future(one.drain())
    await eventually(lambda: connected_to(client, "node2"), what="the client to reach node2")
    first_failure = states.failures()[0]
    assert isinstance(first_failure, InvalidStatus)
    assert first_failure.response.status_code == 503
    assert await holder.wait_closed() == 1012
    await drain
    await client.close()


async def test_a_pending_request_fails_and_queued_deliveries_stay_readable(
    make_node: NodeFactory, nc: NatsClient, backend: PrismBackend
) -> None:
    one, two = await make_node(), await make_node()
    asked: asyncio.Queue[Msg] = asyncio.Queue()

    async def never_answers(msg: Msg) -> None:
        await asked.put(msg)

    async def echo(msg: Msg) -> None:
        await msg.respond(msg.data)

    await nc.subscribe("client.event.slow", cb=never_answers)
    await nc.subscribe("client.event.echo", cb=echo)
    await flush_all(nc)
    client = await PrismClient.connect([ws_url(one), ws_url(two)], reconnect=fast(), randomize=False)
    await backend.deliver(f"conn.{client.conn_id}", "queued before the drop")
    await eventually(lambda: not client._deliveries.empty(), what="the delivery to be queued")
    request = asyncio.ensure_future(client.request("slow", {"n": 1}))
    await asyncio.wait_for(asked.get(), 5)

    await one.stop()
    with pytest.raises(ConnectionLost) as lost:
        await request  # not resent on the new connection
    assert lost.value.code == 1012
    assert await client.receive(5) == "queued before the drop"
    assert await client.request("echo", {"again": True}, timeout=5) == {"again": True}
    assert client.node == "node2"
    assert asked.empty()
    await client.close()


@pytest.mark.parametrize(
    ("code", "reason"),
    [(4500, "kicked"), (1008, "abuse"), (4503, "banned"), (1000, "bye")],
)
async def test_a_terminal_close_does_not_reconnect(
    make_node: NodeFactory, backend: PrismBackend, code: int, reason: str
) -> None:
    node = await make_node()
    states = States()
    client = await PrismClient.connect(ws_url(node), reconnect=fast(), on_state=states.append)
    await client.join("news")
    answer = await backend.close_conn(client.conn_id, code, reason)
    assert answer["ok"] is True
    assert await client.wait_closed() == code
    assert client.state is ConnState.CLOSED
    assert client.closed
    assert client.close_reason == reason
    assert client.reconnects == 0
    assert [c.state for c in states] == [ConnState.CONNECTING, ConnState.CONNECTED, ConnState.CLOSED]
    assert states[-1].code == code
    with pytest.raises(ConnectionLost) as lost:
        await client.receive(1)
    assert lost.value.code == code
    with pytest.raises(ConnectionLost):
        await client.send_event("late")
    with pytest.raises(ConnectionLost):
        await client.wait_connected(1)
    assert [message async for message in client] == []
    await client.close()  # a no-op now


async def test_a_backend_asking_to_reconnect_gets_the_client_back_with_its_rooms(
    make_node: NodeFactory, backend: PrismBackend
) -> None:
    node = await make_node()
    client = await PrismClient.connect(ws_url(node), user="bo", reconnect=fast())
    for room in ("x", "y", "z"):
        await client.join(room)
    await client.leave("y")
    first_conn = client.conn_id
    await backend.close_conn(first_conn, 4002, "please reconnect")
    await eventually(
        lambda: client.conn_id != first_conn and client.state is ConnState.CONNECTED,
        what="the client to reconnect",
    )
    assert client.rooms == ("x", "z")
    members = await backend.deliver("room.z", "z again")
    assert members == [{"node": "node1", "delivered": 1}]
    assert await client.receive(5) == "z again"
    assert await backend.deliver("room.x", "x again") == [{"node": "node1", "delivered": 1}]
    assert await client.receive(5) == "x again"
    with pytest.raises(nats.errors.NoRespondersError):
        await backend.deliver("room.y", "nobody", timeout=2)
    await client.close()


async def test_a_room_refused_on_rejoin_goes_to_errors(make_node: NodeFactory, backend: PrismBackend) -> None:
    roomy = await make_node(max_rooms_per_conn=5)
    strict = await make_node(max_rooms_per_conn=1)
    client = await PrismClient.connect([ws_url(roomy), ws_url(strict)], reconnect=fast(), randomize=False)
    await client.join("first")
    await client.join("second")
    await roomy.stop()
    await eventually(lambda: connected_to(client, "node2"), what="the client to move to node2")
    error = await asyncio.wait_for(client.errors.get(), 5)
    assert error["code"] == "too_many_rooms"
    assert error["room"] == "second"
    assert client.rooms == ("first",)
    assert await backend.deliver("room.first", "still in") == [{"node": "node2", "delivered": 1}]
    assert await client.receive(5) == "still in"
    await client.close()


async def test_backoff_is_used_until_a_node_comes_up(make_node: NodeFactory) -> None:
    port = free_port()
    url = f"ws://127.0.0.1:{port}/ws"
    states = States()
    policy = fast(base=0.01, cap=0.05)
    connecting = asyncio.ensure_future(PrismClient.connect(url, reconnect=policy, on_state=states.append))
    await eventually(lambda: len(states.failures()) >= 3, what="refused attempts")
    assert all(isinstance(e, ConnectionRefusedError) for e in states.failures())
    attempts = states.of(ConnState.CONNECTING)
    assert [c.attempt for c in attempts[:4]] == [1, 2, 3, 4]
    assert attempts[0].delay == 0.0  # the first attempt goes at once
    for change in attempts[1:]:
        assert change.delay is not None
        assert 0.0 <= change.delay <= policy.ceiling(change.attempt - 1)
    assert not connecting.done()

    node = await make_node(port=port)
    client = await asyncio.wait_for(connecting, 5)
    assert client.node == node.node_id
    assert client.reconnects == 0
    assert states[-1].state is ConnState.CONNECTED
    await client.close()


async def test_giving_up_after_max_attempts() -> None:
    url = f"ws://127.0.0.1:{free_port()}/ws"
    with pytest.raises(ConnectFailed) as failed:
        await PrismClient.connect(url, reconnect=fast(base=0.01, max_attempts=3))
    assert failed.value.attempts == 3
    assert isinstance(failed.value.__cause__, ConnectionRefusedError)


async def test_a_refused_handshake_is_terminal(make_node: NodeFactory) -> None:
    node = await make_node()
    states = States()
    with pytest.raises(ConnectFailed) as failed:
        await PrismClient.connect(ws_url(node), user="bad.user", reconnect=True, on_state=states.append)
    assert failed.value.status == 400
    assert failed.value.attempts == 1
    assert "invalid user" in failed.value.reason
    assert [c.state for c in states] == [ConnState.CONNECTING, ConnState.CLOSED]


async def test_close_while_reconnecting_stops_for_good(make_node: NodeFactory) -> None:
    node = await make_node()
    states = States()
    client = await PrismClient.connect(ws_url(node), reconnect=fast(cap=0.05), on_state=states.append)
    await node.stop()
    await eventually(lambda: len(states.failures()) >= 1, what="a failed attempt")
    await client.close()
    assert client.state is ConnState.CLOSED
    assert await client.wait_closed() == 1000
    assert client._task is not None
    assert client._task.done()
    count = len(states)
    with pytest.raises(ConnectionLost):
        await client.join("late", timeout=1)
    assert len(states) == count


async def test_without_reconnect_a_1012_ends_the_client_as_before(make_node: NodeFactory) -> None:
    node = await make_node()
    client = await PrismClient.connect(ws_url(node))
    assert client.backoff is None
    await node.stop()
    assert await client.wait_closed() == 1012
    with pytest.raises(ConnectionLost) as lost:
        await client.receive(1)
    assert lost.value.code == 1012
    assert client.reconnects == 0
