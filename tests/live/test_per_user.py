"""Per-user mode against a real gunicorn: a stream opened with a ticket ends
with ``ticket-expired`` when the ticket runs out, on both stream paths, and
neither tokens nor tickets reach the access log."""
from __future__ import annotations

from typing import Iterator

import pytest

from tests.live.server import LiveServer, StreamReader

pytestmark = pytest.mark.live

ALICE, BOB = "alice-token-0123456789", "bob-token-0123456789"


@pytest.fixture(params=["direct", "portable"])
def users_live(request, tmp_path) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path, {
        "TASKS_USER_TOKENS": f"alice:{ALICE},bob:{BOB}", "TASKS_TICKET_TTL": "1.5",
        "TASKS_HEARTBEAT": "1", "TASKS_ACCESS_LOG": str(tmp_path / "access.log"),
        "TASKS_FAST_PATH": "1" if request.param == "direct" else "0"}).start()
    yield server
    server.stop()


def as_(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_ticket_stream_ends_with_ticket_expired_then_resumes(users_live):
    status, _, task = users_live.request("POST", "/api/tasks", {
        "name": "demo", "params": {"steps": 40, "delay": 0.1}}, headers=as_(ALICE))
    assert status == 202
    _, _, ticket = users_live.request("POST", "/api/tickets", {"task_id": task["id"]},
                                      headers=as_(ALICE))
    with StreamReader(users_live.url, ticket["url"]) as stream:
        assert stream.status == 200
        events = stream.until_end(timeout=10)
    assert events[-1].type == "ticket-expired", stream.summary()
    assert any(e.type == "progress" for e in events)
    last_id = events[-1].id

    _, _, fresh = users_live.request("POST", "/api/tickets", {"task_id": task["id"]},
                                     headers=as_(ALICE))
    seen = [e.id for e in events if e.type != "ticket-expired"]
    while True:  # ticket after ticket until done, as the page does
        with StreamReader(users_live.url, f"{fresh['url']}&lastEventId={last_id}") as stream:
            assert stream.status == 200
            more = stream.until_end(timeout=10)
        seen += [e.id for e in more if e.type != "ticket-expired"]
        last_id = more[-1].id
        if more[-1].type == "done":
            break
        _, _, fresh = users_live.request("POST", "/api/tickets", {"task_id": task["id"]},
                                         headers=as_(ALICE))
    assert len(seen) == len(set(seen)) and seen == sorted(seen, key=int)  # exact resume

    status, _, _ = users_live.request("GET", f"/api/tasks/{task['id']}", headers=as_(BOB))
    assert status == 404

    users_live.stop()
    access_log = (users_live.tmp_path / "access.log").read_text()
    assert f"/api/tasks/{task['id']}/events" in access_log
    assert "ticket=" not in access_log and ALICE not in access_log


def test_the_all_tasks_stream_over_a_socket_shows_only_ones_own(users_live):
    with StreamReader(users_live.url, "/api/events", headers=as_(BOB)) as bobs:
        bobs.until(lambda evs: bool(evs))
        _, _, theirs = users_live.request("POST", "/api/tasks", {
            "name": "demo", "params": {"steps": 5, "delay": 0.01}}, headers=as_(ALICE))
        _, _, own = users_live.request("POST", "/api/tasks", {
            "name": "demo", "params": {"steps": 5, "delay": 0.01}}, headers=as_(BOB))
        events = bobs.until(lambda evs: any(e.type == "done" for e in evs))
    assert {e.json["task_id"] for e in events if e.type != "snapshot"} == {own["id"]}
    assert theirs["id"].encode() not in bobs.body
