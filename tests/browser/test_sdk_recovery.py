"""The browser SDK (/prism.js) recovering missed messages on its own, in real headless Chromium: across a
node going away while messages are published, and in a new client resumed from kept positions."""

from __future__ import annotations

from typing import Any

import orjson
from nats.aio.client import Client as NatsClient

from loadtest.targets.base import free_port
from tests.browser.conftest import PageFactory
from tests.browser.support import load_sdk, wait_js
from tests.conftest import NodeFactory, ws_url

RECOVER: dict[str, Any] = {
    "recover_rooms": ("*",),
    "recover_users": ("*",),
    "recover_storage": "memory",
    "host": "127.0.0.1",
}


async def stored(nc: NatsClient, subject: str, *payloads: str) -> None:
    for payload in payloads:
        await nc.jetstream().publish(subject, payload.encode())


async def test_a_page_gets_what_it_missed_while_no_node_was_up(
    make_node: NodeFactory, new_page: PageFactory, nc: NatsClient
) -> None:
    first = await make_node(**RECOVER)
    second_port = free_port()
    page = await new_page()
    await load_sdk(page, ws_url(first).removesuffix("/ws").replace("ws://", "http://"))
    await page.evaluate(
        """async (urls) => {
            const c = T.make("me", urls, {
                user: "dora", recover: true, randomize: false, reconnect: { base: 0.02, cap: 0.2 },
            });
            await c.connect();
            await c.join("lobby", { recover: true });
        }""",
        [ws_url(first), f"ws://127.0.0.1:{second_port}/ws"],
    )
    await stored(nc, "room.lobby", "r1")
    await stored(nc, "user.dora", "u1")
    await wait_js(page, "() => T.log.me.message.length === 2")
    await first.stop()  # 1012, and no node answers for now: the page keeps trying
    await wait_js(page, "() => T.clients.me.state === 'reconnecting'")
    await stored(nc, "room.lobby", "r2", "r3")
    await stored(nc, "user.dora", "u2")
    await make_node(**RECOVER, port=second_port, node_id="node2")
    await wait_js(
        page, "() => T.clients.me.state === 'connected' && T.log.me.message.length === 5", timeout=30
    )
    await stored(nc, "room.lobby", "r4")
    await wait_js(page, "() => T.log.me.message.length === 6")
    log = await page.evaluate("T.log.me")
    messages = log["message"]
    assert messages[:2] == ["r1", "u1"]
    assert sorted(messages[2:5]) == ["r2", "r3", "u2"]
    assert messages.index("r2") < messages.index("r3")
    assert messages[5] == "r4"
    resumed = [r for r in log["recovery"] if r.get("recovering")]
    assert {(r.get("room"), r.get("user"), r["recovered"]) for r in resumed} == {
        ("lobby", None, True),
        (None, "dora", True),
    }
    assert await page.evaluate("T.clients.me.node") == "node2"


async def test_a_new_client_resumes_from_positions_the_page_kept(
    make_node: NodeFactory, new_page: PageFactory, nc: NatsClient
) -> None:
    node = await make_node(**RECOVER)
    page = await new_page()
    await load_sdk(page, ws_url(node).removesuffix("/ws").replace("ws://", "http://"))
    await page.evaluate(
        """async (url) => {
            const c = T.make("old", url, { user: "eve", recover: true });
            await c.connect();
            await c.join("lobby", { recover: true });
        }""",
        ws_url(node),
    )
    await stored(nc, "room.lobby", "seen")
    await wait_js(page, "() => T.log.old.message.length === 1")
    kept = await page.evaluate(
        """() => {
            const kept = JSON.stringify(T.clients.old.positions());  // what a page keeps in localStorage
            T.clients.old.close();
            return kept;
        }"""
    )
    positions = orjson.loads(kept)
    assert set(positions) == {"rooms", "user"}
    assert isinstance(positions["rooms"]["lobby"]["seq"], int)
    await stored(nc, "room.lobby", "missed")
    await stored(nc, "user.eve", "missed too")
    await page.evaluate(
        """async ([url, kept]) => {
            const saved = JSON.parse(kept);
            const c = T.make("new", url, { user: "eve", recover: saved.user });
            await c.connect();
            await c.join("lobby", { position: saved.rooms.lobby });
        }""",
        [ws_url(node), kept],
    )
    await wait_js(page, "() => T.log.new.message.length === 2")
    log = await page.evaluate("T.log.new")
    assert log["message"] == ["missed too", "missed"]
    assert all(r["recovering"] and r["recovered"] for r in log["recovery"])
    assert await page.evaluate("T.clients.new.position('lobby').seq") > positions["rooms"]["lobby"]["seq"]
