"""The browser SDK (/prism.js) in real headless Chromium against ``prism dev`` (two nodes, one NATS).

``prism dev``'s demo backend answers ``chat.send`` and ``echo``, as it does for a user; the other backends
are plain nats-py clients in the tests: they answer other requests, close connections through the
control subjects. Nothing sleeps to synchronise: every wait is a condition with a deadline
(``wait_for_function``, ``eventually``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import orjson
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from gateway.node import Node
from shared.backend import PrismBackend
from shared.close_codes import should_reconnect
from shared.nats_connection import flush_all
from tests.browser.conftest import PageFactory
from tests.browser.support import REPO, PrismDev, load_sdk, save_screenshot, tsc_binary, wait_js
from tests.conftest import NodeFactory, ws_url
from tests.helpers import alive
from tests.security.tokens import TokenKit


async def ignore(msg: Msg) -> None:
    """A backend that takes requests and never answers them."""


async def test_two_pages_on_different_nodes_in_one_room_see_each_others_messages(
    prism_dev: PrismDev, new_page: PageFactory
) -> None:
    pages = []
    for user, base, ws in zip(("alice", "bob"), prism_dev.http_urls, prism_dev.ws_urls, strict=True):
        page = await new_page()
        await load_sdk(page, base)
        welcome = await page.evaluate(
            """async ([user, ws]) => {
                const c = T.make("me", ws, { user });
                const welcome = await c.connect();
                await c.join("lobby");
                return welcome;
            }""",
            [user, ws],
        )
        assert welcome["user"] == user
        pages.append(page)
    alice, bob = pages
    nodes = [await p.evaluate("T.clients.me.node") for p in pages]
    assert nodes == ["node1", "node2"]
    # Presence (prism dev turns it on for every room): alice sees bob arrive on the other node.
    await wait_js(alice, "() => T.clients.me.members('lobby').includes('bob')")
    await wait_js(bob, "() => T.clients.me.members('lobby').join() === 'alice,bob'")
    presence = await bob.evaluate("T.log.me.presence")
    assert presence[0] == {"room": "lobby", "members": ["alice", "bob"]}

    await alice.evaluate("T.clients.me.emit('chat.send', {room: 'lobby', text: 'hi from alice'})")
    await bob.evaluate("T.clients.me.emit('chat.send', {room: 'lobby', text: 'hi from bob'})")
    for page in pages:
        await wait_js(page, "() => T.log.me.message.length >= 2")
        received = [orjson.loads(m) for m in await page.evaluate("T.log.me.message")]
        assert {m["type"] for m in received} == {"chat"}  # from prism dev's demo backend
        assert sorted((m["from"], m["text"]) for m in received) == [
            ("alice", "hi from alice"),
            ("bob", "hi from bob"),
        ]
    # Something to look at in the artifact: the page shows what it received.
    await alice.evaluate(
        """() => {
            document.body.innerHTML = "";
            const pre = document.createElement("pre");
            pre.textContent = [`conn ${T.clients.me.conn} on ${T.clients.me.node}`,
                               `members ${T.clients.me.members("lobby").join(", ")}`,
                               ...T.log.me.message].join("\\n");
            document.body.append(pre);
        }"""
    )
    assert (await save_screenshot(alice, "two-pages-one-room")).stat().st_size > 0


async def test_a_page_survives_its_node_being_killed_and_restarted(
    prism_dev: PrismDev, new_page: PageFactory, backend: NatsClient
) -> None:
    page = await new_page()
    await load_sdk(page, prism_dev.http_urls[0])
    first_conn = await page.evaluate(
        """async (ws) => {
            const c = T.make("me", ws, { user: "carol", reconnect: { base: 0.1, cap: 1 } });
            await c.connect();
            await c.join("survivors");
            return c.conn;
        }""",
        prism_dev.ws_urls[0],  # node1 only: the page must wait for node1 to come back
    )
    old_pid = prism_dev.node_pids["node1"]
    seen = len(prism_dev.snapshot())
    os.kill(old_pid, signal.SIGKILL)
    line = await prism_dev.wait_for_line(r"node1\s+restarted", after=seen)
    new_pid = int(line.split()[-1])
    assert new_pid != old_pid
    assert prism_dev.node_pids["node1"] == new_pid
    assert alive(new_pid)

    # The client saw the drop (1006, reconnect), reconnected to the new node1 process and rejoined.
    await wait_js(
        page, "() => T.log.me.welcome.length === 2 && T.clients.me.state === 'connected'", timeout=30
    )
    log = await page.evaluate("T.log.me")
    assert log["close"][0] == {"code": 1006, "reason": "", "willReconnect": True}
    assert log["state"][0] == "connecting"
    assert log["state"][1:] == ["connected", "reconnecting", "connected"]
    assert await page.evaluate("[...T.clients.me.rooms]") == ["survivors"]
    assert await page.evaluate("T.clients.me.conn") != first_conn
    assert await page.evaluate("T.clients.me.reconnects") == 1

    receipts = await PrismBackend(backend).deliver("room.survivors", "still here")
    assert [r["node"] for r in receipts] == ["node1"]
    await wait_js(page, "() => T.log.me.message.includes('still here')")


async def test_reconnect_honours_close_codes(
    prism_dev: PrismDev, new_page: PageFactory, backend: NatsClient
) -> None:
    page = await new_page()
    await load_sdk(page, prism_dev.http_urls[1])
    codes = [1008, 4500, 1012, 4002, 4100]
    conns: dict[str, str] = await page.evaluate(
        """async ([ws, codes]) => {
            const conns = {};
            for (const code of codes) {
                const c = T.make(String(code), ws, { user: `u${code}`, reconnect: { base: 0.05, cap: 0.2 } });
                await c.connect();
                await c.join("policy");
                conns[code] = c.conn;
            }
            return conns;
        }""",
        [prism_dev.ws_urls[1], codes],
    )
    control = PrismBackend(backend)
    for code in codes:
        reply = await control.close_conn(conns[str(code)], code=code, reason=f"test {code}")
        assert reply["ok"], reply
    for code in codes:
        expected = should_reconnect(code)
        final = "connected" if expected else "closed"
        await wait_js(
            page,
            "([name, final]) => T.clients[name].state === final && T.log[name].close.length > 0",
            [str(code), final],
        )
        log = await page.evaluate("(name) => T.log[name]", str(code))
        assert log["close"][0] == {"code": code, "reason": f"test {code}", "willReconnect": expected}
        if expected:  # a new connection, in the same room again
            assert len(log["welcome"]) == 2
            assert await page.evaluate("(n) => [...T.clients[n].rooms]", str(code)) == ["policy"]
        else:
            assert log["state"][-1] == "closed"
            assert len(log["welcome"]) == 1
    # Nothing reconnects later either: the closed ones stay closed while the others get room messages.
    await control.to_room("policy", "after the closes")
    for code in codes:
        if should_reconnect(code):
            await wait_js(page, "(n) => T.log[n].message.includes('after the closes')", str(code))
    for code in codes:
        if not should_reconnect(code):
            assert await page.evaluate("(n) => T.log[n].welcome.length", str(code)) == 1


async def test_close_code_policy_and_backoff_match_the_python_client(
    prism_dev: PrismDev, new_page: PageFactory
) -> None:
    page = await new_page()
    await load_sdk(page, prism_dev.http_urls[0])
    codes = [None, 1000, 1001, 1002, 1005, 1006, 1007, 1008, 1009, 1011, 1012, 1013, 1015, 3000]
    codes += [4000, 4001, 4002, 4100, 4499, 4500, 4501, 4503, 4600, 4999]
    verdicts = await page.evaluate("(codes) => codes.map((c) => sdk.shouldReconnect(c))", codes)
    assert verdicts == [should_reconnect(code) for code in codes]
    # Full jitter: delay = random() * min(cap, base * factor ** attempt), seconds.
    ceilings = await page.evaluate(
        "() => [0, 1, 2, 3, 10, 100].map((n) => sdk.backoffDelay(n, {base: 0.25, cap: 30}, () => 1))"
    )
    assert ceilings == [0.25, 0.5, 1.0, 2.0, 30, 30]
    assert await page.evaluate("sdk.backoffDelay(3, {}, () => 0)") == 0
    assert await page.evaluate("sdk.backoffDelay(2, undefined, () => 0.5)") == 0.5  # 0.25 * 4 / 2


async def test_requests_replies_timeouts_and_errors(
    prism_dev: PrismDev, new_page: PageFactory, backend: NatsClient
) -> None:
    async def binary(msg: Msg) -> None:
        await msg.respond(b"\xff\x00\x01")

    # echo is answered by prism dev's demo backend
    await backend.subscribe("client.event.bytes", cb=binary)
    await backend.subscribe("client.event.silent", cb=ignore)  # never answers
    await flush_all(backend)
    page = await new_page()
    await load_sdk(page, prism_dev.http_urls[0])
    results = await page.evaluate(
        """async (ws) => {
            const c = T.make("me", ws, { user: "dave" });
            await c.connect();
            return {
                echo: await T.settle(c.request("echo", { a: [1, 2] })),
                bytes: await T.settle(c.request("bytes").then((b) => Array.from(b))),
                nobody: await T.settle(c.request("nobody.home", null)),
                silent: await T.settle(c.request("silent", 1, { timeout: 300 })),
                badRoom: await T.settle(c.join("no spaces allowed")),
                leave: await T.settle(c.leave("never-joined")),
            };
        }""",
        prism_dev.ws_urls[0],
    )
    assert results["echo"] == {"ok": True, "value": {"a": [1, 2]}}
    assert results["bytes"] == {"ok": True, "value": [255, 0, 1]}
    assert results["nobody"]["error"]["code"] == "no_responders"
    assert results["nobody"]["error"]["name"] == "PrismError"
    assert results["silent"]["error"]["code"] == "timeout"
    assert results["badRoom"]["error"]["code"] == "invalid_room"
    assert results["leave"] == {"ok": True, "value": None}
    # A late reply to the timed-out request is ignored, not reported as an error.
    assert await page.evaluate("T.log.me.error") == []


async def test_pending_requests_fail_when_the_connection_drops(
    prism_dev: PrismDev, new_page: PageFactory, backend: NatsClient
) -> None:
    await backend.subscribe("client.event.hang", cb=ignore)
    await flush_all(backend)
    page = await new_page()
    await load_sdk(page, prism_dev.http_urls[1])
    conn = await page.evaluate(
        """async (ws) => {
            const c = T.make("me", ws, { user: "erin", reconnect: { base: 0.05, cap: 0.2 } });
            await c.connect();
            window.pending = T.settle(c.request("hang", null, { timeout: 20000 }));
            return c.conn;
        }""",
        prism_dev.ws_urls[1],
    )
    await PrismBackend(backend).close_conn(conn, code=4002, reason="move along")
    outcome = await page.evaluate("window.pending")
    assert outcome["ok"] is False
    assert outcome["error"]["code"] == "connection_lost"
    await wait_js(page, "() => T.clients.me.state === 'connected' && T.log.me.welcome.length === 2")


async def test_binary_messages_both_ways(
    prism_dev: PrismDev, new_page: PageFactory, backend: NatsClient
) -> None:
    raw: asyncio.Queue[Msg] = asyncio.Queue()
    await backend.subscribe("client.message", cb=raw.put)
    await flush_all(backend)
    page = await new_page()
    await load_sdk(page, prism_dev.http_urls[0])
    conn = await page.evaluate(
        """async (ws) => {
            const c = T.make("me", ws, { user: "frank" });
            await c.connect();
            c.send(new Uint8Array([0, 1, 2, 250, 255]));
            c.send("plain text");
            return c.conn;
        }""",
        prism_dev.ws_urls[0],
    )
    first = await asyncio.wait_for(raw.get(), 10)
    second = await asyncio.wait_for(raw.get(), 10)
    assert (first.data, (first.headers or {}).get("Prism-Frame")) == (bytes([0, 1, 2, 250, 255]), "binary")
    assert (second.data, (second.headers or {}).get("Prism-Frame")) == (b"plain text", "text")
    assert (first.headers or {}).get("Prism-User") == "frank"

    await PrismBackend(backend).to_conn(conn, b"\x00\xffbin", binary=True)
    await PrismBackend(backend).to_conn(conn, '{"text":"json stays a string"}')
    await wait_js(page, "() => T.log.me.message.length === 2")
    assert await page.evaluate("T.log.me.message") == [
        {"binary": [0, 255, 98, 105, 110]},
        '{"text":"json stays a string"}',
    ]


async def test_token_via_subprotocol_with_authentication_on(
    make_node: NodeFactory, new_page: PageFactory, tmp_path: Path
) -> None:
    kit = TokenKit()
    node: Node = await make_node(**kit.node_settings(tmp_path), host="127.0.0.1")
    url = ws_url(node)
    base = url.removesuffix("/ws").replace("ws://", "http://")
    tokens = [kit.hs256("grace", rooms=["lobby"]), kit.hs256("grace", rooms=["lobby", "vip"])]
    page = await new_page()
    await load_sdk(page, base)
    result = await page.evaluate(
        """async ([ws, first, second]) => {
            const asked = [];
            const c = T.make("me", ws, { token: async () => { asked.push(1); return first; } });
            const welcome = await c.connect();
            const vipBefore = await T.settle(c.join("vip"));
            await c.join("lobby");
            await c.refresh(second);
            const vipAfter = await T.settle(c.join("vip"));
            return { welcome, vipBefore, vipAfter, asked: asked.length };
        }""",
        [url, *tokens],
    )
    assert result["welcome"]["user"] == "grace"
    assert result["asked"] == 1
    assert result["vipBefore"]["error"]["code"] == "forbidden"
    assert result["vipAfter"] == {"ok": True, "value": None}

    # A token the node refuses (HTTP 401): the browser only sees the socket fail, so connect() gives
    # up after connectAttempts failures instead of retrying forever.
    refused = await page.evaluate(
        """async ([ws, bad]) => {
            const reconnect = { base: 0.01, cap: 0.05 };
            const c = T.make("bad", ws, { token: bad, connectAttempts: 3, reconnect });
            const outcome = await T.settle(c.connect());
            return { outcome, state: c.state, closes: T.log.bad.close };
        }""",
        [url, kit.hs256("grace", ttl=-60)],
    )
    assert refused["outcome"]["error"]["code"] == "connect_failed"
    assert refused["state"] == "closed"
    assert [c["willReconnect"] for c in refused["closes"]] == [True, True, False]


async def test_prism_js_and_its_declarations_are_served_with_etags(
    prism_dev: PrismDev, new_page: PageFactory
) -> None:
    page = await new_page()
    response = await page.goto(f"{prism_dev.http_urls[1]}/prism.js")
    assert response is not None
    assert response.status == 200
    headers = await response.all_headers()
    assert headers["content-type"] == "text/javascript; charset=utf-8"
    assert headers["cache-control"] == "no-cache"
    source = (REPO / "gateway/web/prism.js").read_bytes()
    assert await response.body() == source
    again = await page.context.request.get(
        f"{prism_dev.http_urls[0]}/prism.js", headers={"If-None-Match": headers["etag"]}
    )
    assert again.status == 304  # same file on every node, same ETag


async def test_a_page_of_another_origin_imports_a_nodes_prism_js(
    prism_dev: PrismDev, new_page: PageFactory
) -> None:
    """The README's example: an application page (here node2's origin; another port is another origin)
    imports node1's /prism.js, which a browser allows only with CORS, and connects with it."""
    page = await new_page()
    await page.goto(f"{prism_dev.http_urls[1]}/healthz")
    welcome = await page.evaluate(
        """async ([sdk, ws]) => {
            const { PrismClient } = await import(sdk);
            const client = new PrismClient(ws, { user: "carol", reconnect: false });
            const welcome = await client.connect();
            client.close();
            return welcome;
        }""",
        [f"{prism_dev.http_urls[0]}/prism.js", prism_dev.ws_urls[0]],
    )
    assert (welcome["user"], welcome["node"]) == ("carol", "node1")


def test_the_declarations_type_check_a_usage_example(tmp_path: Path) -> None:
    tsc = tsc_binary()
    if tsc is None:
        pytest.skip("no TypeScript compiler (.ci/run installs one under .venv/tools)")
    (tmp_path / "prism.d.ts").write_bytes((REPO / "gateway/web/prism.d.ts").read_bytes())
    (tmp_path / "usage.ts").write_text(USAGE_TS)
    args = [tsc, "--noEmit", "--strict", "--target", "es2022", "--module", "es2022", "--lib", "es2022,dom"]
    result = subprocess.run([*args, str(tmp_path / "usage.ts")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    (tmp_path / "wrong.ts").write_text(WRONG_TS)
    result = subprocess.run([*args, str(tmp_path / "wrong.ts")], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0  # the declarations do catch misuse
    assert "wrong.ts" in result.stdout


USAGE_TS = """
import { PrismClient, PrismError, CloseCode, shouldReconnect, backoffDelay } from "./prism";
import type { ConnectionState, Delivery, PresenceEvent, Position, Positions, RecoveryEvent } from "./prism";

async function main(): Promise<void> {
  const client = new PrismClient(["ws://a/ws", "ws://b/ws"], {
    user: "alice",
    token: async () => "jwt",
    reconnect: { base: 0.25, cap: 30, factor: 2 },
    requestTimeout: 5000,
  });
  const off = client.on("state", (s: ConnectionState) => console.log(s));
  off();
  client.on("welcome", (w) => console.log(w.conn, w.node, w.user, w.route));
  client.on("message", (m: Delivery) => console.log(typeof m === "string" ? m : m.byteLength));
  client.on("presence", (p: PresenceEvent) => console.log(p.room, p.members ?? p.joined ?? p.left));
  client.on("error", (e) => console.log(e.code, e.message, e.ref));
  client.on("close", ({ code, reason, willReconnect }) => console.log(code, reason, willReconnect));
  const welcome = await client.connect();
  console.log(welcome.conn);
  await client.join("lobby");
  await client.join("chat", { recover: true, timeout: 1000 });
  const kept: Position | null = client.position("chat");
  if (kept) await client.join("chat", { position: kept });
  client.on("recovery", (r: RecoveryEvent) => console.log(r.room ?? r.user, r.recovering && !r.recovered));
  const saved: Positions = client.positions();
  const resumed = new PrismClient("ws://a/ws", { recover: saved.user ?? true });
  console.log(resumed.position()?.seq, saved.rooms["chat"]?.epoch);
  await client.leave("lobby", { timeout: 1000 });
  const sent: boolean = client.emit("chat.send", { text: "hi" });
  const reply = await client.request<{ a: number }>("echo", { a: 1 }, { timeout: 2000 });
  console.log(sent, reply.a, client.send(new Uint8Array([1])), client.send("raw"));
  await client.refresh("new.jwt");
  const rooms: ReadonlySet<string> = client.rooms;
  console.log(rooms.has("lobby"), client.members("lobby"), client.conn, client.node, client.user);
  console.log(client.state, client.reconnects, client.welcome?.conn);
  try {
    await client.request("x");
  } catch (error) {
    if (error instanceof PrismError) console.log(error.code, error.closeCode);
  }
  console.log(CloseCode.SERVICE_RESTART === 1012, shouldReconnect(4002), backoffDelay(3));
  client.close();
}
void main();
"""

WRONG_TS = """
import { PrismClient } from "./prism";
const client = new PrismClient("ws://a/ws", { reconnect: "yes" });
client.on("state", (s: number) => s);
"""
