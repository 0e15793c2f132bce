"""The web console (``/`` on every node of ``prism dev``) in real headless Chromium: two users on two nodes,
rooms and presence, an event round trip, a request nobody answers, the form's defaults answered by the
demo backend, "Notify me" through the notification service, and a phone-sized screen. Screenshots go to
test-artifacts/browser/ (``docs/console.png`` is made by ``python -m tests.browser.screenshot``).

"Notify me" needs the notification service to answer ``notify.self``: ``prism dev`` turns that on with
``PRISM_NOTIFY_CLIENT_REQUESTS=true``.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from nats.aio.client import Client as NatsClient

from tests.browser.screenshot import PHONE, chat_backend, open_console
from tests.browser.support import PrismDev, save_screenshot

if TYPE_CHECKING:
    from playwright.async_api import Browser


def fresh_room() -> str:
    """A room no other test of this session's prism dev uses."""
    return "console-" + secrets.token_hex(4)


async def test_the_console_loads_at_the_root_without_errors(prism_dev: PrismDev, browser: Browser) -> None:
    page = await open_console(browser, prism_dev.http_urls[1], "alice")
    response = await page.page.request.get(f"{prism_dev.http_urls[1]}/console/config.json")
    config = await response.json()
    assert config["notify"] is True
    assert len(config["nodes"]) == 2
    assert await page.page.title() == "Prism console"
    options = await page.page.locator('[data-testid="node-select"] option').all_text_contents()
    assert [o.split(" ")[0] for o in options] == ["node1", "node2", "any"]
    assert await page.text("state") == "closed"
    assert await page.page.locator('[data-testid="notify-me"]').is_visible()
    assert await page.page.locator('[data-testid="connect"]').is_enabled()
    assert await page.page.locator('[data-testid="join"]').is_disabled()  # nothing to do until connected
    assert page.errors == []


async def test_two_users_on_two_nodes_share_a_room_and_talk(
    prism_dev: PrismDev, browser: Browser, backend: NatsClient
) -> None:
    await chat_backend(backend, "console.say")
    room = fresh_room()
    alice = await open_console(browser, prism_dev.http_urls[0], "alice", node=1)
    bob = await open_console(browser, prism_dev.http_urls[0], "bob", node=2)
    for page, node in ((alice, "node1"), (bob, "node2")):
        await page.connect()
        assert await page.text("node-id") == node
        assert (await page.text("conn-id")).startswith(node + ".")
    assert await alice.text("user-id") == "alice"
    await alice.join(room)
    await bob.join(room)
    await alice.wait_member("bob")
    await bob.wait_member("alice")
    assert await alice.members() == ["alice", "bob"]
    assert await alice.text("presence-room") == f"in {room}"

    # an event round trip: bob's event, republished by a backend to the room, reaches both pages
    await bob.fill_event("console.say", {"room": room, "text": "hi <b>alice</b>"})
    await bob.page.click(bob.by("emit"))
    for page in (alice, bob):
        entry = await page.wait_log("delivery", "hi <b>alice</b>")  # shown as text, not as markup
        assert '"from": "bob"' in entry
    assert await alice.page.locator(".log b").count() == 0

    # a request nobody answers is an error, shown next to the form and in the log
    outcome, text = await alice.request("nobody.home", {"q": 1})
    assert outcome == "error"
    assert "no_responders" in text
    await alice.wait_log("error", "nobody.home")

    # "Notify me": through the notification service's stream, back to this user only
    notification_id = await alice.notify_me()
    assert notification_id.startswith("self-")
    entry = await alice.wait_log("notification", notification_id)
    assert "you asked for this" in entry
    assert await bob.page.locator('[data-testid="log-entry"][data-kind="notification"]').count() == 0

    await save_screenshot(alice.page, "console-desktop")
    await bob.leave(room)
    await alice.wait_member("bob", present=False)  # after PRISM_PRESENCE_DEBOUNCE (1 s in these tests)
    assert alice.errors == []
    assert bob.errors == []


async def test_the_forms_defaults_work_as_they_are_against_prism_dev(
    prism_dev: PrismDev, browser: Browser
) -> None:
    """Connect, Join and Send request with nothing typed: prism dev's demo backend answers the default
    chat message (to the default room), and it comes back to the page as a delivery."""
    page = await open_console(browser, prism_dev.http_urls[0], "dana")
    await page.connect()
    room = await page.page.input_value(page.by("room-input"))
    await page.page.click(page.by("join"))
    await page.page.locator(f'[data-testid="room"][data-room="{room}"]').wait_for()
    result = page.page.locator(page.by("request-result"))
    await page.page.click(page.by("request"))
    await result.and_(page.page.locator('[data-outcome="ok"], [data-outcome="error"]')).wait_for()
    assert await result.get_attribute("data-outcome") == "ok", await result.text_content()
    assert f'"room": "{room}"' in (await result.text_content() or "")
    entry = await page.wait_log("delivery", '"from": "dana"')
    assert '"type": "chat"' in entry
    assert page.errors == []


async def test_on_a_phone_sized_screen_there_is_no_horizontal_scroll(
    prism_dev: PrismDev, browser: Browser
) -> None:
    room = fresh_room()
    page = await open_console(
        browser, prism_dev.http_urls[0], "a-rather-long-user-name-on-a-phone", viewport=PHONE
    )
    assert await page.horizontal_overflow() == 0
    await page.connect()
    await page.join(room)
    await page.wait_member("a-rather-long-user-name-on-a-phone")
    await page.notify_me()
    await page.fill_event("x" * 60, {"long": "y" * 300})
    await page.page.click(page.by("emit"))
    await page.wait_log("sent", "x" * 60)
    assert await page.horizontal_overflow() == 0
    box = await page.page.locator('[data-testid="connect"]').bounding_box()
    assert box is not None
    assert box["x"] >= 0
    assert box["x"] + box["width"] <= PHONE["width"]
    await save_screenshot(page.page, "console-phone")
    dark = await open_console(browser, prism_dev.http_urls[1], "bob", viewport=PHONE, dark=True)
    assert await dark.horizontal_overflow() == 0
    await save_screenshot(dark.page, "console-phone-dark")
    assert page.errors == []
    assert dark.errors == []
