"""The page's connections: a server restart under it, the API token, and
one /api/events stream shared by every tab of the browser."""
from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Pages, screenshot
from tests.live.server import LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.live]

EVENTS = r"/api/events"


def test_server_restart_under_an_open_page(tmp_path: Path, pages: Pages) -> None:
    env = {"TASKS_HEARTBEAT": "1"}
    first = LiveServer(tmp_path, env).start()
    second = None
    try:
        page = pages.new(first.url)
        connection = page.locator("#connection")
        expect(connection).to_have_attribute("data-state", "connected")
        record = first.start_task("demo", steps=1000, delay=0.05)
        task = page.locator(f'.task[data-task-id="{record["id"]}"]')
        expect(task).to_have_attribute("data-status", "running")
        # While the server is away Chrome logs each refused reconnection itself.
        pages.allow(r"Failed to load resource: net::ERR_")
        first.stop()
        expect(connection).to_have_attribute("data-state", "reconnecting")
        expect(connection).to_contain_text("reconnecting")
        screenshot(page, "08-reconnecting")

        second = LiveServer(tmp_path, env, port=first.port).start()
        expect(connection).to_have_attribute("data-state", "connected", timeout=15_000)
        # The task the old server could not finish is shown as such ...
        expect(task).to_have_attribute("data-status", "interrupted")
        # ... and the page carries on with new tasks.
        after = second.start_task("demo", steps=5, delay=0.05)
        expect(page.locator(f'.task[data-task-id="{after["id"]}"]')).to_have_attribute(
            "data-status", "succeeded")
    finally:
        first.stop()
        if second:
            second.stop()


def test_token_mode(tmp_path: Path, pages: Pages) -> None:
    server = LiveServer(tmp_path, {"TASKS_HEARTBEAT": "1", "TASKS_API_TOKEN": "s3cret"}).start()
    # Chrome logs each refused call itself ("Failed to load resource: ... 401").
    pages.allow(r"status of 401")
    try:
        page = pages.new(server.url)
        dialog = page.locator("#token-dialog")
        expect(dialog).to_be_visible()
        page.fill("#token-input", "wrong")
        page.keyboard.press("Enter")
        expect(page.locator("#token-error")).to_contain_text("refused")
        screenshot(page, "09-token")
        page.fill("#token-input", "s3cret")
        page.click("#token-form button[type=submit]")
        expect(dialog).to_be_hidden()
        expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
        assert page.evaluate("sessionStorage.getItem('taskstream.token')") == "s3cret"
        # Streams open with tickets: the token itself never goes in a URL.
        assert not [url for url in pages.requests if "token=" in url]
        assert [url for url in pages.requests if "/api/events?ticket=" in url]

        page.fill("#param-steps", "5")
        page.fill("#param-delay", "0.05")
        page.click("#start-button")
        task = page.locator("#task-list .task")
        expect(task).to_have_attribute("data-status", "succeeded")
        expect(task.locator(".count")).to_have_text("5 / 5")
        # A reload keeps the token for this tab: no dialog again.
        page.reload()
        expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
        expect(dialog).to_be_hidden()
        expect(task).to_have_count(1)
        page.close()
    finally:
        server.stop()


def test_tabs_share_one_connection(live: LiveServer, pages: Pages) -> None:
    tabs = [pages.new(live.url) for _ in range(7)]
    for tab in tabs:
        expect(tab.locator("#connection")).to_have_attribute("data-state", "connected")
    record = live.start_task("demo", steps=5, delay=0.05)
    for tab in tabs:  # the seventh tab too: nothing stalls behind six connections
        expect(tab.locator(f'.task[data-task-id="{record["id"]}"]')).to_have_attribute(
            "data-status", "succeeded")
    assert pages.count(EVENTS) == 1, "seven tabs, one /api/events connection"
    leaders = [tab for tab in tabs if tab.locator("#connection").get_attribute("data-shared") == "false"]
    assert len(leaders) == 1
    screenshot(tabs[-1], "10-seventh-tab")

    # The leader goes; another tab takes over from the last event id.
    leaders[0].close()
    rest = [tab for tab in tabs if tab is not leaders[0]]
    after = live.start_task("demo", steps=3, delay=0.05)
    for tab in rest:
        expect(tab.locator(f'.task[data-task-id="{after["id"]}"]')).to_have_attribute(
            "data-status", "succeeded")
    assert pages.count(EVENTS) == 2
    resumed = [url for url in pages.requests if EVENTS in url][-1]
    assert "lastEventId=" in resumed, resumed


def test_offline_is_shown_and_the_page_comes_back(live: LiveServer, pages: Pages) -> None:
    page = pages.new(live.url)
    connection = page.locator("#connection")
    expect(connection).to_have_attribute("data-state", "connected")
    pages.allow(r"Failed to load resource: net::ERR_")  # Chrome logs the cut stream
    pages.context.set_offline(True)
    expect(connection).to_have_attribute("data-state", "offline")
    expect(connection).to_contain_text("Offline")
    pages.context.set_offline(False)
    expect(connection).to_have_attribute("data-state", "connected", timeout=15_000)
    record = live.start_task("demo", steps=3, delay=0.05)
    expect(page.locator(f'.task[data-task-id="{record["id"]}"]')).to_have_attribute(
        "data-status", "succeeded")
