"""The Python client's room presence view and its tokens, against real nodes (parity with /prism.js)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.client import PrismClient
from shared.errors import RequestFailed
from tests.conftest import NodeFactory, ws_url
from tests.helpers import eventually
from tests.security.tokens import TokenKit


async def test_members_follow_presence_frames_across_nodes(make_node: NodeFactory) -> None:
    settings = {"room_presence": ("lobby",), "presence_batch": 0.05, "presence_debounce": 0.1}
    node1 = await make_node(**settings)
    node2 = await make_node(**settings)
    alice = await PrismClient.connect(ws_url(node1), user="alice")
    bob = await PrismClient.connect(ws_url(node2), user="bob")
    try:
        await alice.join("lobby")
        await eventually(lambda: alice.members("lobby") == ("alice",), what="alice's snapshot")
        await bob.join("lobby")
        await eventually(lambda: alice.members("lobby") == ("alice", "bob"), what="bob's join, seen by alice")
        await eventually(lambda: bob.members("lobby") == ("alice", "bob"), what="bob's snapshot")
        frame = await alice.presence.get()
        assert frame == {"prism": "presence", "room": "lobby", "members": ["alice"]}

        await bob.leave("lobby")
        assert bob.members("lobby") == ()  # forgotten on leave
        await eventually(lambda: alice.members("lobby") == ("alice",), what="bob's leave, seen by alice")
        assert alice.members("elsewhere") == ()
    finally:
        await alice.close()
        await bob.close()


async def test_a_token_function_is_sent_as_a_bearer_header_and_refresh_replaces_it(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    kit = TokenKit()
    node = await make_node(**kit.node_settings(tmp_path))
    minted: list[str] = []

    async def token() -> str:  # e.g. a call to the application's auth endpoint
        minted.append(kit.hs256("alice", ttl=60))
        return minted[-1]

    client = await PrismClient.connect(ws_url(node), token=token)
    try:
        assert client.user == "alice"
        assert len(minted) == 1
        await client.refresh(kit.hs256("alice", ttl=600))
        with pytest.raises(RequestFailed) as refused:
            await client.refresh(kit.hs256("mallory", ttl=600))  # another user: not a refresh
        assert refused.value.code == "forbidden"
        with pytest.raises(RequestFailed) as refused:
            await client.refresh(kit.hs256("alice", ttl=-60))
        assert refused.value.code == "invalid_token"
    finally:
        await client.close()

    fixed = await PrismClient.connect(ws_url(node), token=kit.hs256("bob"))
    try:
        assert fixed.user == "bob"
    finally:
        await fixed.close()
