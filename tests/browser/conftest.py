"""Fixtures for tests in real headless Chromium (Debian's /usr/bin/chromium, driven by playwright; nothing
downloads a browser) against ``prism dev``.

- ``prism_dev`` (:class:`tests.browser.support.PrismDev`): one ``prism dev --nodes 2`` for the whole
  session, every node ready when a test starts. ``.http_urls`` / ``.ws_urls`` (node1 first),
  ``.nats_url``, ``.node_pids`` (latest PID per node), ``.wait_for_line(regex, after=n)``, ``.lines``.
- ``browser``: a Chromium launched for the test; ``new_page(url=None)``: a fresh page (own context) whose
  uncaught JS errors fail the test; ``backend``: a nats-py client on the dev NATS.
- Screenshots: ``tests.browser.support.save_screenshot(page, name)`` -> test-artifacts/browser/.

Every test here is marked ``browser`` and skipped, saying why, without Chromium or playwright.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import nats
import pytest
from nats.aio.client import Client as NatsClient

from tests.browser.support import CHROMIUM, CHROMIUM_ARGS, PrismDev, missing_requirement, start_prism_dev

HERE = Path(__file__).resolve().parent
_MISSING = missing_requirement()

if TYPE_CHECKING:  # imported at run time inside the fixtures, so a missing playwright only skips
    from playwright.async_api import Browser, Page

PageFactory = Callable[..., Awaitable["Page"]]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.browser)
            if _MISSING is not None:
                item.add_marker(pytest.mark.skip(reason=_MISSING))


@pytest.fixture(scope="session")
def _prism_dev_session() -> Iterator[PrismDev]:
    dev = start_prism_dev(nodes=2)
    try:
        yield dev
    finally:
        dev.stop()


@pytest.fixture
async def prism_dev(_prism_dev_session: PrismDev) -> PrismDev:
    """The session's ``prism dev``, with every node ready (an earlier test may have killed one)."""
    await _prism_dev_session.wait_ready()
    return _prism_dev_session


@pytest.fixture
async def backend(prism_dev: PrismDev) -> AsyncIterator[NatsClient]:
    nc = await nats.connect(prism_dev.nats_url)
    try:
        yield nc
    finally:
        await nc.close()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless Debian Chromium, launched for this test (playwright's objects belong to one event loop,
    and every test has its own)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
async def new_page(browser: Browser) -> AsyncIterator[PageFactory]:
    """``await new_page(url=None)``: a page in its own browser context (no shared storage). An uncaught
    error in any page fails the test at teardown."""
    errors: list[str] = []

    async def make(url: str | None = None) -> Page:
        context = await browser.new_context(viewport={"width": 390, "height": 844})  # a phone-sized screen
        page = await context.new_page()
        page.on("pageerror", lambda error: errors.append(f"{page.url}: {error}"))
        if url is not None:
            await page.goto(url)
        return page

    yield make
    for context in browser.contexts:
        await context.close()
    assert not errors, f"uncaught errors in the page: {errors}"
