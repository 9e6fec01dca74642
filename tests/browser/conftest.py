"""Real headless Chromium against a real gunicorn server.

Playwright's sync API runs its own greenlet-based dispatcher; it works under
``python -m gevent.monkey --module pytest`` (the patched socket and threading
are what it expects of the standard library), so no subprocess is needed.
One browser serves the whole session; each test gets a fresh context (its
own storage, locks and BroadcastChannels) and a fresh server.

Every page's console errors and uncaught exceptions fail the test, and the
screenshots go to ``test-artifacts/screenshots/`` (printed at the end).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests.live.server import LiveServer

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
WAIT_MS = 10_000  # every expect() is bounded by this unless it says otherwise

def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SCREENSHOTS.exists() and any(SCREENSHOTS.iterdir()):
        terminalreporter.write_line(f"browser screenshots: {SCREENSHOTS}")


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path, {"TASKS_HEARTBEAT": "1"}).start()
    yield server
    server.stop()


class Pages:
    """Opens pages in one browser context and records what goes wrong in them."""

    def __init__(self, context: BrowserContext) -> None:
        self.context = context
        self.errors: list[str] = []
        self.allowed: list[re.Pattern[str]] = []
        self.requests: list[str] = []
        context.on("request", lambda request: self.requests.append(request.url))

    def new(self, url: str) -> Page:
        page = self.context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.on("console", lambda msg: msg.type == "error" and self._error(f"console: {msg.text}"))
        page.on("pageerror", lambda exc: self._error(f"pageerror: {exc}"))
        page.on("dialog", lambda dialog: (self._error(f"dialog: {dialog.message}"), dialog.dismiss()))
        page.goto(url)
        return page

    def allow(self, pattern: str) -> None:
        """Let console errors matching ``pattern`` pass (say why where you call it)."""
        self.allowed.append(re.compile(pattern))

    def _error(self, text: str) -> None:
        if not any(p.search(text) for p in self.allowed):
            self.errors.append(text)

    def count(self, path_pattern: str) -> int:
        return sum(1 for url in self.requests if re.search(path_pattern, url))


def _pages(browser: Browser, **options: Any) -> Iterator[Pages]:
    context = browser.new_context(**{"viewport": {"width": 1100, "height": 900}, **options})
    pages = Pages(context)
    yield pages
    context.close()
    assert pages.errors == [], "errors in the page"


@pytest.fixture
def pages(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Pages]:
    yield from _pages(browser, **getattr(request, "param", {}))


@pytest.fixture
def other_pages(browser: Browser) -> Iterator[Pages]:
    """A second browser context: another person, with cookies and storage of their own."""
    yield from _pages(browser)


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
