"""The page in real Chromium: start, watch, fail, cancel, and text stays text."""
from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import WAIT_MS, Pages, screenshot
from tests.live.server import LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.live]

XSS = "<img src=x onerror=alert(1)>"


def start_from_form(page: Page, **fields: str) -> str:
    """Fill the demo form, press Start, return the new task's id."""
    page.select_option("#task-type", "demo")
    for name, value in fields.items():
        page.fill(f"#param-{name}", value)
    with page.expect_response(lambda r: r.url.endswith("/api/tasks")
                              and r.request.method == "POST") as response:
        page.click("#start-button")
    assert response.value.status == 202, response.value.text()
    return str(response.value.json()["id"])


def row(page: Page, task_id: str):  # type: ignore[no-untyped-def]
    return page.locator(f'#task-list .task[data-task-id="{task_id}"]')


def test_demo_from_the_form_reaches_100_percent(live: LiveServer, pages: Pages) -> None:
    page = pages.new(live.url)
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    expect(page.locator("#task-description")).to_contain_text("Counts steps")
    # The page runs under the strict policy it sends (a violation would be a console error).
    _, headers, _ = live.request("GET", "/")
    assert headers["Content-Security-Policy"].startswith("default-src 'self'")
    task_id = start_from_form(page, steps="20", delay="0.1", message="step")
    task = row(page, task_id)
    expect(task).to_have_attribute("data-status", "running")
    expect(task.locator(".count")).to_contain_text("/ 20")
    screenshot(page, "01-running")
    expect(task).to_have_attribute("data-status", "succeeded")
    assert task.locator("progress").evaluate("bar => bar.value") == 100
    expect(task.locator(".percent")).to_have_text("100%")
    expect(task.locator(".count")).to_have_text("20 / 20")
    expect(task.locator(".badge")).to_have_text("succeeded")
    expect(task.locator(".task-outcome")).to_have_text('Result: {"steps":20}')
    expect(task.locator(".cancel")).to_be_hidden()
    expect(page.locator("#announcer")).to_contain_text("succeeded")
    screenshot(page, "02-succeeded")


def test_a_failing_task_shows_its_error(live: LiveServer, pages: Pages) -> None:
    page = pages.new(live.url)
    task_id = start_from_form(page, steps="10", delay="0.02", fail_at="3")
    task = row(page, task_id)
    expect(task).to_have_attribute("data-status", "failed")
    expect(task.locator(".task-outcome")).to_have_text("RuntimeError: failed at step 3")
    screenshot(page, "03-failed")


def test_cancel_from_the_page(live: LiveServer, pages: Pages) -> None:
    page = pages.new(live.url)
    task_id = start_from_form(page, steps="1000", delay="0.05")
    task = row(page, task_id)
    expect(task).to_have_attribute("data-status", "running")
    task.locator(".cancel").click()
    expect(task).to_have_attribute("data-status", "cancelled")
    expect(task.locator(".cancel")).to_be_hidden()
    _, _, record = live.request("GET", f"/api/tasks/{task_id}")
    assert record["status"] == "cancelled"
    screenshot(page, "04-cancelled")


def test_tasks_started_by_the_api_appear(live: LiveServer, pages: Pages) -> None:
    page = pages.new(live.url)
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    done = live.start_task("demo", steps=5, delay=0.05)
    failed = live.start_task("demo", steps=8, delay=0.02, fail_at=6)
    running = live.start_task("demo", steps=400, delay=0.05, message="counting")
    expect(row(page, done["id"])).to_have_attribute("data-status", "succeeded")
    expect(row(page, done["id"]).locator(".count")).to_have_text("5 / 5")
    expect(row(page, failed["id"])).to_have_attribute("data-status", "failed")
    expect(row(page, running["id"])).to_have_attribute("data-status", "running")
    expect(row(page, running["id"]).locator(".eta")).to_contain_text("ETA")
    screenshot(page, "00-overview")
    live.request("POST", f"/api/tasks/{running['id']}/cancel")
    expect(row(page, running["id"])).to_have_attribute("data-status", "cancelled")


def test_finished_tasks_are_listed_on_load(live: LiveServer, pages: Pages) -> None:
    record = live.start_task("demo", steps=2, delay=0.01, fail_at=2)
    page = pages.new(live.url)
    expect(row(page, record["id"])).to_have_attribute("data-status", "failed")


def test_a_message_with_markup_renders_as_text(live: LiveServer, pages: Pages) -> None:
    page = pages.new(live.url)
    task_id = start_from_form(page, steps="3", delay="0.01", message=XSS)
    task = row(page, task_id)
    expect(task).to_have_attribute("data-status", "succeeded")
    assert task.locator(".task-message").text_content() == f"{XSS} 3"
    assert page.locator("img").count() == 0
    page.goto(f"{live.url}/tasks/{task_id}")
    expect(page.locator("#detail-task .task-message")).to_have_text(f"{XSS} 3")
    assert page.locator("img").count() == 0


def test_client_side_checks_mirror_the_schema(live: LiveServer, pages: Pages) -> None:
    page = pages.new(live.url)
    page.select_option("#task-type", "demo")
    page.fill("#param-steps", "5000000")
    page.click("#start-button")
    expect(page.locator("#error-steps")).to_have_text("must be at most 1000000, got 5000000")
    expect(page.locator("#param-steps")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#param-steps")).to_be_focused()
    page.fill("#param-steps", "2.5")
    page.click("#start-button")
    expect(page.locator("#error-steps")).to_have_text("must be a whole number, got 2.5")
    assert pages.count(r"/api/tasks$") == 0, "nothing is sent while a field is wrong"
    page.fill("#param-steps", "4")
    expect(page.locator("#error-steps")).to_be_hidden()


def test_the_servers_400_is_shown_next_to_the_field(live: LiveServer, pages: Pages) -> None:
    """A schema without the maximum lets the page send what the server refuses."""
    def loosen(route):  # type: ignore[no-untyped-def]
        body = route.fetch().json()
        for task_type in body["task_types"]:
            for schema in task_type["params"].values():
                schema.pop("maximum", None)
        route.fulfill(json=body)

    pages.context.route("**/api/task-types", loosen)
    # Chrome logs the refused POST itself ("Failed to load resource: ... 400").
    pages.allow(r"status of 400")
    page = pages.new(live.url)
    page.select_option("#task-type", "demo")
    page.fill("#param-steps", "5000000")
    page.click("#start-button")
    expect(page.locator("#error-steps")).to_have_text("must be at most 1000000, got 5000000")
    expect(page.locator("#task-list .task")).to_have_count(0)
    screenshot(page, "05-server-refused")


def test_keyboard_only_start(live: LiveServer, pages: Pages) -> None:
    page = pages.new(live.url)
    expect(page.locator("#param-steps")).to_be_visible()
    page.focus("#param-steps")
    page.keyboard.press("Control+a")
    page.keyboard.type("3")
    page.keyboard.press("Enter")  # submits the form
    expect(page.locator("#task-list .task")).to_have_count(1)
    expect(page.locator("#task-list .task")).to_have_attribute("data-status", "succeeded")
    page.keyboard.press("Tab")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none"), "the focused element shows a focus ring"


@pytest.mark.parametrize("pages", [{"viewport": {"width": 360, "height": 740},
                                    "color_scheme": "dark", "reduced_motion": "reduce"}],
                         indirect=True)
def test_phone_width_dark(live: LiveServer, pages: Pages) -> None:
    live.start_task("demo", steps=4, delay=0.01, fail_at=4)
    page = pages.new(live.url)
    running = live.start_task("demo", steps=400, delay=0.05)
    expect(row(page, running["id"])).to_have_attribute("data-status", "running")
    expect(page.locator("#task-list .task")).to_have_count(2)
    assert page.evaluate("document.documentElement.scrollWidth <= innerWidth"), "no sideways scroll"
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(15, 20, 25)", "dark colours when the system asks for them"
    screenshot(page, "06-phone-dark")
    live.request("POST", f"/api/tasks/{running['id']}/cancel")


def test_detail_view_streams_the_log_and_closes_after_done(live: LiveServer,
                                                           pages: Pages) -> None:
    record = live.start_task("demo", steps=30, delay=0.05)
    page = pages.new(f"{live.url}/tasks/{record['id']}")
    task = page.locator("#detail-task .task")
    expect(task).to_have_attribute("data-status", "succeeded")
    # Opened mid-task, it still shows the whole log: the server replays the
    # task's history for ?lastEventId=0 while it holds all of it.
    expect(page.locator("#log .log-line")).to_have_count(2)  # demo logs at start and end
    expect(page.locator("#log .message").last).to_contain_text("30")
    expect(page.locator("#connection")).to_have_attribute("data-state", "finished")
    expect(task.locator(".task-outcome")).to_have_text('Result: {"steps":30}')
    screenshot(page, "07-detail")
    opened = pages.count(r"/api/tasks/[^/]+/events")
    page.wait_for_timeout(3500)  # longer than the largest retry: a reconnect would show
    assert pages.count(r"/api/tasks/[^/]+/events") == opened == 1


def test_detail_view_of_an_unknown_task(live: LiveServer, pages: Pages) -> None:
    pages.allow(r"status of 404")  # Chrome logs the refused fetch itself
    page = pages.new(f"{live.url}/tasks/no-such-task")
    expect(page.locator("#detail-error")).to_contain_text("no task with this id", timeout=WAIT_MS)


def test_the_form_follows_any_schema(live: LiveServer, pages: Pages) -> None:
    """Booleans become checkboxes and an empty nullable field sends null; the
    task type is made up, so the server's refusal shows above the button."""
    def add_type(route):  # type: ignore[no-untyped-def]
        body = route.fetch().json()
        body["task_types"].insert(0, {
            "name": "flags", "title": "Flags", "description": "A made-up type",
            "params": {"loud": {"type": "boolean", "default": True, "required": False},
                       "label": {"type": "string", "default": None, "required": False,
                                 "nullable": True, "maxLength": 5}}})
        route.fulfill(json=body)

    sent = []
    pages.context.route("**/api/task-types", add_type)
    pages.context.on("request", lambda r: r.method == "POST" and sent.append(r.post_data_json))
    pages.allow(r"status of 400")  # Chrome logs the refused POST itself
    page = pages.new(live.url)
    expect(page.locator("#task-description")).to_have_text("A made-up type")
    assert page.locator("#param-loud").get_attribute("type") == "checkbox"
    assert page.locator("#param-label").get_attribute("maxlength") == "5"
    page.uncheck("#param-loud")
    page.click("#start-button")
    expect(page.locator("#form-error")).to_contain_text("flags")
    assert sent == [{"name": "flags", "params": {"loud": False, "label": None}}]


def test_detail_view_resumes_after_being_hidden_without_repeats(live: LiveServer,
                                                                pages: Pages) -> None:
    """A hidden tab gives its connection back; shown again, it resumes from
    the last event id, and no log line or progress is repeated."""
    record = live.start_task("demo", steps=40, delay=0.05)
    page = pages.new(f"{live.url}/tasks/{record['id']}")
    task = page.locator("#detail-task .task")
    expect(task).to_have_attribute("data-status", "running")
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    # "connected" comes with the response's head; wait for an event too, so
    # there is an id to resume after.
    expect(page.locator("#log .message").first).to_have_text("counting 40 steps, 0.05 s apart")
    page.evaluate("""() => {
        Object.defineProperty(document, "visibilityState", {value: "hidden", configurable: true});
        document.dispatchEvent(new Event("visibilitychange"));
    }""")
    page.wait_for_timeout(400)
    page.evaluate("""() => {
        Object.defineProperty(document, "visibilityState", {value: "visible", configurable: true});
        document.dispatchEvent(new Event("visibilitychange"));
    }""")
    expect(task).to_have_attribute("data-status", "succeeded")
    expect(task.locator(".count")).to_have_text("40 / 40")
    expect(page.locator("#log .message")).to_have_text(
        ["counting 40 steps, 0.05 s apart", "counted 40 steps"])
    streams = [url for url in pages.requests if "/events" in url]
    assert len(streams) == 2, streams
    assert "lastEventId=" in streams[1] and not streams[1].endswith("lastEventId=0")
