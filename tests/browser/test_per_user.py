"""The page in per-user mode (TASKS_USER_TOKENS): signing in through the
dialog, tasks seen only by their owner, streams on tickets that expire every
two seconds, the session surviving a reload, and signing out."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import pytest
from playwright.sync_api import Page, Request, Response, expect

from tests.browser.conftest import WAIT_MS, Pages, screenshot
from tests.browser.test_page import row, start_from_form
from tests.live.server import LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.live]

ALICE = "alice-token-0123456789"
BOB = "bob-token-0123456789"
USERS = {
    "TASKS_USER_TOKENS": f"alice:{ALICE},bob:{BOB}",
    "TASKS_SECRET_KEY": "test-secret-key-0123456789abcdef",
    "TASKS_TICKET_TTL": "2",
    "TASKS_HEARTBEAT": "1",
}
TASK_STREAM = re.compile(r"/api/tasks/[^/?]+/events")
# Chrome logs each refused call itself ("Failed to load resource: ... 401"):
# the page's first GET /api/session before signing in, and a wrong token.
REFUSED = r"status of 401"

# Records, in every page of a context, each event its EventSources receive,
# before the page's own handling: [{url, type, id}].
RECORD_EVENTS = """
(() => {
  const Original = window.EventSource;
  window.streamEvents = [];
  window.EventSource = class extends Original {
    constructor(url, init) {
      super(url, init);
      for (const type of ["snapshot", "status", "progress", "log", "done", "ticket-expired"]) {
        this.addEventListener(type, (event) => window.streamEvents.push(
          {url: String(url), type, id: event.lastEventId}));
      }
    }
  };
})();
"""


@pytest.fixture
def users_live(tmp_path: Path) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path, USERS).start()
    yield server
    server.stop()


def sign_in(page: Page, token: str, user: str) -> None:
    dialog = page.locator("#token-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#token-title")).to_have_text("Sign in")
    page.fill("#token-input", token)
    page.click("#token-form button[type=submit]")
    expect(dialog).to_be_hidden()
    expect(page.locator("#account-user")).to_have_text(user)


def stream_opens(pages: Pages, pattern: re.Pattern[str]) -> list[str]:
    return [url for url in pages.requests if pattern.search(url)]


def received(page: Page) -> list[dict[str, str]]:
    """The events the page's EventSources received (RECORD_EVENTS), checked
    to have come each once and in order, across every reopen."""
    events: list[dict[str, str]] = page.evaluate("window.streamEvents")
    ids = [int(e["id"]) for e in events if e["type"] not in ("snapshot", "ticket-expired")]
    assert ids == sorted(set(ids)), f"an event came twice or out of order: {ids}"
    return events


def test_a_task_outlives_several_tickets(users_live: LiveServer, pages: Pages) -> None:
    """A task running four times as long as a ticket: each stream is renewed
    on ticket-expired, resumes after its last id, and misses nothing."""
    pages.context.add_init_script(RECORD_EVENTS)
    refused: list[str] = []

    def note_refused(response: Response) -> None:
        if response.status == 401:
            refused.append(response.url)

    pages.context.on("response", note_refused)
    pages.allow(REFUSED)
    page = pages.new(users_live.url)
    expect(page.locator("#token-dialog")).to_be_visible()
    page.fill("#token-input", "not-a-token-0123456789")
    page.keyboard.press("Enter")
    expect(page.locator("#token-error")).to_contain_text("refused")
    screenshot(page, "11-sign-in")
    sign_in(page, ALICE, "alice")
    pages.allowed.clear()  # signed in: from here on no call may be refused
    refused.clear()
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected")

    task_id = start_from_form(page, steps="40", delay="0.2")  # 8 s: four tickets' lifetimes
    detail = pages.new(f"{users_live.url}/tasks/{task_id}")  # same cookie: no dialog
    task = detail.locator("#detail-task .task")
    expect(task).to_have_attribute("data-status", "running")
    expect(detail.locator("#account-user")).to_have_text("alice")
    run_ms = 8_000
    expect(row(page, task_id)).to_have_attribute("data-status", "succeeded",
                                                 timeout=WAIT_MS + run_ms)
    expect(task).to_have_attribute("data-status", "succeeded", timeout=WAIT_MS)
    screenshot(detail, "12-per-user-detail")

    for shown in (row(page, task_id), task):
        assert shown.locator("progress").evaluate("bar => bar.value") == 100
        expect(shown.locator(".count")).to_have_text("40 / 40")
        expect(shown.locator(".task-outcome")).to_have_text('Result: {"steps":40}')
    lines = detail.locator("#log .message")
    expect(lines).to_have_text(["counting 40 steps, 0.2 s apart", "counted 40 steps"])

    # Each view renewed its ticket on ticket-expired and resumed after its last id.
    for view, pattern in ((page, re.compile(r"/api/events\?")), (detail, TASK_STREAM)):
        events = received(view)
        assert sum(e["type"] == "ticket-expired" for e in events) >= 2, events
        opened = stream_opens(pages, pattern)
        assert len(opened) >= 3 and all("ticket=" in url for url in opened), opened
        assert all("lastEventId=" in url for url in opened[1:]), opened
    assert pages.count(r"/api/tickets$") >= 6
    assert not [url for url in pages.requests if "token=" in url], "no token in any URL"
    assert refused == [], "no call refused once signed in (a dead ticket reused, say)"


def test_others_do_not_see_a_users_tasks(users_live: LiveServer, pages: Pages,
                                         other_pages: Pages) -> None:
    for context in (pages, other_pages):
        context.allow(REFUSED)
    alice = pages.new(users_live.url)
    sign_in(alice, ALICE, "alice")
    bob = other_pages.new(users_live.url)
    sign_in(bob, BOB, "bob")
    for page in (alice, bob):
        expect(page.locator("#connection")).to_have_attribute("data-state", "connected")

    alices = start_from_form(alice, steps="4", delay="0.05")
    bobs = start_from_form(bob, steps="6", delay="0.05")
    expect(row(alice, alices)).to_have_attribute("data-status", "succeeded")
    expect(row(bob, bobs)).to_have_attribute("data-status", "succeeded")
    # Each list, live and reloaded, holds its owner's task only.
    for page, theirs in ((alice, bobs), (bob, alices)):
        expect(page.locator("#task-list .task")).to_have_count(1)
        page.reload()
        expect(page.locator("#task-list .task")).to_have_count(1)
        expect(row(page, theirs)).to_have_count(0)

    other_pages.allow(r"status of 404")  # Chrome logs the refused fetch itself
    bob.goto(f"{users_live.url}/tasks/{alices}")
    expect(bob.locator("#detail-error")).to_contain_text("no task with this id")
    expect(bob.locator("#detail-task .task")).to_have_count(0)
    screenshot(bob, "13-not-yours")


def test_reload_keeps_the_session_and_cancel_sends_the_csrf_token(
        users_live: LiveServer, pages: Pages) -> None:
    pages.allow(REFUSED)
    page = pages.new(users_live.url)
    sign_in(page, ALICE, "alice")
    task_id = start_from_form(page, steps="1000", delay="0.05")
    page.reload()
    expect(page.locator("#account-user")).to_have_text("alice")
    expect(page.locator("#token-dialog")).to_be_hidden()
    task = row(page, task_id)
    expect(task).to_have_attribute("data-status", "running")

    def is_cancel(request: Request) -> bool:
        return request.url.endswith(f"/api/tasks/{task_id}/cancel")

    with page.expect_request(is_cancel) as cancel:
        task.locator(".cancel").click()
    expect(task).to_have_attribute("data-status", "cancelled")
    headers = cancel.value.all_headers()
    assert headers.get("x-csrf-token"), "the cancel carried the CSRF token"
    assert "authorization" not in headers, "the cookie is the credential"
    status, _, record = users_live.request("GET", f"/api/tasks/{task_id}",
                                           headers={"Authorization": f"Bearer {ALICE}"})
    assert (status, record["status"], record["owner"]) == (200, "cancelled", "alice")


def test_sign_out_asks_to_sign_in_again_in_every_tab(users_live: LiveServer,
                                                     pages: Pages) -> None:
    pages.allow(REFUSED)
    first = pages.new(users_live.url)
    sign_in(first, ALICE, "alice")
    task_id = start_from_form(first, steps="2", delay="0.01")
    expect(row(first, task_id)).to_have_attribute("data-status", "succeeded")
    second = pages.new(users_live.url)
    expect(second.locator("#account-user")).to_have_text("alice")
    expect(row(second, task_id)).to_have_count(1)

    first.click("#sign-out")
    for page in (first, second):  # the other tab hears of it and starts afresh too
        expect(page.locator("#token-dialog")).to_be_visible()
        expect(page.locator("#account")).to_be_hidden()
        expect(row(page, task_id)).to_have_count(0)
    assert not [c for c in pages.context.cookies() if c["name"] == "taskstream_session"]
    screenshot(first, "14-signed-out")

    sign_in(first, BOB, "bob")  # someone else at the same browser sees none of alice's
    expect(first.locator("#connection")).to_have_attribute("data-state", "connected")
    expect(first.locator("#empty")).to_be_visible()
    # The other tab, still asking, follows the sign-in and shows bob's (no) tasks.
    expect(second.locator("#account-user")).to_have_text("bob")
    expect(second.locator("#token-dialog")).to_be_hidden()
    expect(row(second, task_id)).to_have_count(0)


def test_a_session_gone_mid_stream_asks_to_sign_in_and_the_stream_resumes(
        users_live: LiveServer, pages: Pages) -> None:
    """The cookie goes (expired, or cleared): the next ticket renewal is
    refused, the page asks to sign in, then carries on after its last event."""
    pages.context.add_init_script(RECORD_EVENTS)
    pages.allow(REFUSED)
    page = pages.new(users_live.url)
    sign_in(page, ALICE, "alice")
    task_id = start_from_form(page, steps="30", delay="0.2")
    detail = pages.new(f"{users_live.url}/tasks/{task_id}")
    task = detail.locator("#detail-task .task")
    expect(task).to_have_attribute("data-status", "running")
    page.close()  # one page asking, not two
    pages.context.clear_cookies()
    sign_in(detail, ALICE, "alice")  # asked for at the next renewal, within a ticket's 2 s
    expect(task).to_have_attribute("data-status", "succeeded", timeout=WAIT_MS)
    expect(task.locator(".count")).to_have_text("30 / 30")
    expect(detail.locator("#log .message")).to_have_text(
        ["counting 30 steps, 0.2 s apart", "counted 30 steps"])
    received(detail)
    assert all("lastEventId=" in url for url in stream_opens(pages, TASK_STREAM))


def test_a_stale_csrf_token_is_renewed_once(users_live: LiveServer, pages: Pages) -> None:
    """Signing in again elsewhere in the browser makes a new session: the
    page's CSRF token is then stale, and the page takes the new one."""
    pages.allow(REFUSED)
    pages.allow(r"status of 403")  # the refused first try, logged by Chrome
    page = pages.new(users_live.url)
    sign_in(page, ALICE, "alice")
    task_id = start_from_form(page, steps="1000", delay="0.05")
    task = row(page, task_id)
    expect(task).to_have_attribute("data-status", "running")
    again = pages.context.request.post(f"{users_live.url}/api/session", data={"token": ALICE})
    assert again.status == 200, again.text()
    task.locator(".cancel").click()
    expect(task).to_have_attribute("data-status", "cancelled")
    expect(page.locator("#action-error")).to_be_hidden()
    assert pages.count(r"/cancel$") == 2, "refused once (csrf_failed), then sent again"
