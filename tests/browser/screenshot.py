"""The web console driven as a user would (helpers for ``test_console.py``), and the README's screenshot.

    python -m tests.browser.screenshot            # starts prism dev, writes docs/console.png (1280x800)
    python -m tests.browser.screenshot OUT.png    # somewhere else

It needs what the browser tests need (Debian's /usr/bin/chromium and playwright). Everything in the picture
comes from a plain ``prism dev`` and two console tabs: the chat message and the reply from its demo
backend, the notification from its notification service.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from shared.nats_connection import flush_all
from tests.browser.support import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    REPO,
    PrismDev,
    missing_requirement,
    start_prism_dev,
)

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page, ViewportSize

DOCS_PNG = REPO / "docs" / "console.png"
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 375, "height": 700}
WAIT_MS = 15_000


@dataclass
class ConsolePage:
    """One console tab, in its own browser context, with every console error and uncaught exception."""

    page: Page
    errors: list[str] = field(default_factory=list)

    def by(self, testid: str) -> str:
        return f'[data-testid="{testid}"]'

    async def text(self, testid: str) -> str:
        return (await self.page.locator(self.by(testid)).first.text_content()) or ""

    async def connect(self) -> None:
        await self.page.click(self.by("connect"))
        await self.page.locator('[data-testid="state"][data-state="connected"]').wait_for(timeout=WAIT_MS)

    async def join(self, room: str) -> None:
        await self.page.fill(self.by("room-input"), room)
        await self.page.click(self.by("join"))
        await self.page.locator(f'[data-testid="room"][data-room="{room}"]').wait_for(timeout=WAIT_MS)

    async def leave(self, room: str) -> None:
        await self.page.click(f'[data-testid="room"][data-room="{room}"] [data-testid="leave"]')
        await self.page.locator(f'[data-testid="room"][data-room="{room}"]').wait_for(
            state="detached", timeout=WAIT_MS
        )

    async def wait_member(self, user: str, present: bool = True) -> None:
        member = self.page.locator(f'[data-testid="member"][data-user="{user}"]')
        await member.wait_for(state="visible" if present else "detached", timeout=WAIT_MS)

    async def members(self) -> list[str]:
        users = await self.page.locator('[data-testid="member"]').evaluate_all(
            "els => els.map(e => e.dataset.user)"
        )
        return [str(u) for u in users]

    async def fill_event(self, name: str, data: object) -> None:
        await self.page.fill(self.by("event-name"), name)
        await self.page.fill(self.by("event-data"), orjson.dumps(data).decode())

    async def request(self, name: str, data: object) -> tuple[str, str]:
        """Send a request from the form; return the result's outcome (ok or error) and text."""
        await self.fill_event(name, data)
        result = self.page.locator(self.by("request-result"))
        await result.evaluate("el => { el.hidden = true; el.dataset.outcome = ''; }")
        await self.page.click(self.by("request"))
        done = result.and_(self.page.locator('[data-outcome="ok"], [data-outcome="error"]'))
        await done.wait_for(timeout=WAIT_MS)
        return (await result.get_attribute("data-outcome") or ""), (await result.text_content() or "")

    async def wait_log(self, kind: str, containing: str) -> str:
        """The text of the first log entry of ``kind`` whose text contains ``containing`` (waits for it)."""
        entry = self.page.locator(f'[data-testid="log-entry"][data-kind="{kind}"]', has_text=containing)
        await entry.first.wait_for(timeout=WAIT_MS)
        return (await entry.first.text_content()) or ""

    async def notify_me(self) -> str:
        """Click "Notify me"; return the notification's id once it is in the log."""
        await self.page.click(self.by("notify-me"))
        ok = self.page.locator('[data-testid="notify-result"][data-outcome="ok"]')
        failed = self.page.locator('[data-testid="notify-result"][data-outcome="error"]')
        await ok.or_(failed).wait_for(timeout=WAIT_MS)
        if await failed.count():
            raise AssertionError(f"notify.self failed: {await failed.text_content()}")
        text = await ok.text_content() or ""
        notification_id = text.split()[2].rstrip(";")  # "stored as self-...; it arrives in the log"
        await self.wait_log("notification", notification_id)
        return notification_id

    async def horizontal_overflow(self) -> int:
        """How many CSS pixels the page is wider than its viewport (0: no horizontal scroll)."""
        width: int = await self.page.evaluate(
            "Math.max(document.documentElement.scrollWidth, document.body.scrollWidth) - window.innerWidth"
        )
        return width


async def open_console(
    browser: Browser,
    base_url: str,
    user: str,
    node: int = 1,
    viewport: ViewportSize | None = None,
    dark: bool = False,
) -> ConsolePage:
    context = await browser.new_context(
        viewport=viewport or DESKTOP, color_scheme="dark" if dark else "light", device_scale_factor=1
    )
    page = await context.new_page()
    console = ConsolePage(page)
    page.on(
        "console",
        lambda m: console.errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None,
    )
    page.on("pageerror", lambda e: console.errors.append(f"uncaught: {e}"))
    await page.goto(f"{base_url}/?user={user}&node={node}")
    await page.locator("html[data-ready=true]").wait_for(timeout=WAIT_MS)
    return console


async def chat_backend(nc: NatsClient, event: str = "chat.send") -> None:
    """Republishes ``{room, text}`` events to ``room.<room>`` as ``{from, text}``, and answers ``echo``."""

    async def chat(msg: Msg) -> None:
        data = orjson.loads(msg.data)
        sender = (msg.headers or {}).get("Prism-User")
        await nc.publish(f"room.{data['room']}", orjson.dumps({"from": sender, "text": data["text"]}))

    async def echo(msg: Msg) -> None:
        await msg.respond(orjson.dumps({"echo": orjson.loads(msg.data)}))

    await nc.subscribe(f"client.event.{event}", cb=chat)
    await nc.subscribe("client.event.echo", cb=echo)
    await flush_all(nc)


def _ports_free(*ports: int) -> bool:
    for port in ports:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def _start_dev() -> PrismDev:
    """prism dev on 8080 and 8081, as in the README, when they are free; else on any free ports."""
    if not _ports_free(8080, 8081):
        return start_prism_dev(2)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return PrismDev(2, 8080, ARTIFACTS / "prism-dev-screenshot.log").start()


async def take_screenshot(out: Path) -> Path:
    if (missing := missing_requirement()) is not None:
        raise SystemExit(missing)
    from playwright.async_api import async_playwright

    dev = await asyncio.to_thread(_start_dev)
    try:
        await dev.wait_ready()
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            base = dev.http_urls[0]
            alice = await open_console(browser, base, "alice", 1)
            bob = await open_console(browser, base, "bob", 2)
            for page in (alice, bob):
                await page.connect()
                await page.join("lobby")
            await alice.wait_member("bob")
            await bob.fill_event("chat.send", {"room": "lobby", "text": "hi alice, from node2"})
            await bob.page.click(bob.by("emit"))
            await alice.wait_log("delivery", "hi alice")
            await alice.notify_me()
            await alice.request("echo", {"text": "ping"})
            await alice.fill_event("chat.send", {"room": "lobby", "text": "hello"})
            await alice.page.mouse.move(1, 1)
            await alice.page.evaluate("document.activeElement?.blur(); window.scrollTo(0, 0)")
            await alice.page.screenshot(path=str(out))
            await browser.close()
    finally:
        await asyncio.to_thread(dev.stop)
    return out


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DOCS_PNG
    path = asyncio.run(take_screenshot(out))
    print(f"{path}: {path.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
