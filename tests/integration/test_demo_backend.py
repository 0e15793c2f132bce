"""The demo backend (``prism demo-backend``) against a real nats-server and real gateway nodes: echo
replies, chat messages reaching a room's members on every node, the room's history, refusals, and the
subject prefix. (Its NATS permissions: tests/integration/test_nats_auth.py.)"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest

from shared.client import PrismClient
from shared.demo_backend import DemoBackend, DemoConfig
from tests.conftest import NodeFactory, ws_url

DemoFactory = Callable[..., Awaitable[DemoBackend]]


@pytest.fixture
async def start_demo(nats_server: Any) -> AsyncIterator[DemoFactory]:
    """Start demo backends in this test's loop; stopped (drained) at teardown."""
    started: list[DemoBackend] = []

    async def start(**settings: Any) -> DemoBackend:
        demo = DemoBackend(DemoConfig(nats_url=nats_server.url, **settings), now=lambda: "NOW")
        started.append(demo)
        await demo.start()
        return demo

    yield start
    for demo in started:
        await demo.stop()


async def test_echo_answers_a_request_with_its_own_data(
    make_node: NodeFactory, start_demo: DemoFactory
) -> None:
    node = await make_node()
    await start_demo()
    async with await PrismClient.connect(ws_url(node), user="alice") as client:
        assert await client.request("echo", {"a": [1, 2]}) == {"a": [1, 2]}
        assert await client.request("echo", "hi") == "hi"
        assert await client.request("echo") is None  # no data: null


async def test_chat_messages_reach_every_member_on_every_node_and_stay_in_the_history(
    make_node: NodeFactory, start_demo: DemoFactory
) -> None:
    node1, node2 = await make_node(), await make_node()
    await start_demo()
    async with (
        await PrismClient.connect(ws_url(node1), user="alice") as alice,
        await PrismClient.connect(ws_url(node2), user="bob") as bob,
    ):
        for client in (alice, bob):
            await client.join("lobby")
        await alice.send_event("chat.send", {"room": "lobby", "text": "hi bob"})  # an event: no reply
        first = {"type": "chat", "room": "lobby", "from": "alice", "text": "hi bob", "sent_at": "NOW"}
        # Alice's event and Bob's request leave by two nodes' NATS connections, which NATS does not order:
        # Bob answers once Alice's message has reached everyone.
        for client in (alice, bob):
            received = orjson.loads(await client.receive(5))
            assert {k: v for k, v in received.items() if k != "id"} == first
        reply = await bob.request("chat.send", {"room": "lobby", "text": "hi alice"})
        assert set(reply) == {"id", "room"}
        assert reply["room"] == "lobby"
        second = {"type": "chat", "id": reply["id"], "room": "lobby", "from": "bob", "text": "hi alice"}
        second["sent_at"] = "NOW"
        for client in (alice, bob):
            assert orjson.loads(await client.receive(5)) == second
        history = await alice.request("chat.history", {"room": "lobby"})
        assert history["room"] == "lobby"
        assert [(m["from"], m["text"]) for m in history["messages"]] == [
            ("alice", "hi bob"),
            ("bob", "hi alice"),
        ]
        assert await alice.request("chat.history", {"room": "empty"}) == {"room": "empty", "messages": []}


async def test_a_bad_request_is_answered_with_the_reason_and_a_bad_event_is_dropped(
    make_node: NodeFactory, start_demo: DemoFactory
) -> None:
    node = await make_node()
    await start_demo()
    async with await PrismClient.connect(ws_url(node), user="alice") as alice:
        await alice.join("lobby")
        refused = await alice.request("chat.send", {"text": "hello"})
        assert refused["error"] == "invalid_request"
        assert 'data needs "room"' in refused["message"]
        refused = await alice.request("chat.history", None)
        assert refused["error"] == "invalid_request"
        # One handler takes a connection's events in order: had the bad event been published, it would
        # arrive before the good one.
        await alice.send_event("chat.send", {"room": "lobby"})
        await alice.send_event("chat.send", {"room": "lobby", "text": "the good one"})
        assert orjson.loads(await alice.receive(5))["text"] == "the good one"


async def test_the_subject_prefix_applies_to_every_subject(
    make_node: NodeFactory, start_demo: DemoFactory
) -> None:
    node = await make_node(subject_prefix="acme.")
    await start_demo(subject_prefix="acme.")
    async with await PrismClient.connect(ws_url(node), user="alice") as alice:
        await alice.join("lobby")
        assert await alice.request("echo", {"x": 1}) == {"x": 1}
        await alice.request("chat.send", {"room": "lobby", "text": "prefixed"})
        assert orjson.loads(await alice.receive(5))["text"] == "prefixed"
