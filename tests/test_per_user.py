"""Per-user mode (TASKS_USER_TOKENS): each task is its creator's alone, the
page signs in with a cookie and sends a CSRF header, and streams open with
short-lived tickets. Runs on both backends."""
from __future__ import annotations

import json
from typing import Any

import pytest

from server import create_app
from tasks.auth import SESSION_COOKIE, Auth
from tasks.config import ConfigError
from tests.conftest import TestStream
from tests.fixtures import GATES

ALICE, BOB = "alice-token-0123456789", "bob-token-0123456789"
USERS = {"TASKS_USER_TOKENS": f"alice:{ALICE},bob:{BOB}",
         "TASKS_SECRET_KEY": "test-secret-key-0123456789abcdef"}


def as_(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def app(make_app):
    return make_app(**USERS)


def start(client, token: str, name: str = "demo", **params: Any) -> dict[str, Any]:
    rv = client.post("/api/tasks", json={"name": name, "params": params}, headers=as_(token))
    assert rv.status_code == 202, rv.json
    return rv.json


def gate_task(client, token: str, gate: str, steps: int = 3) -> dict[str, Any]:
    return start(client, token, "t_gate", gate=gate, steps=steps)


def test_another_users_task_is_404_everywhere(client):
    task = gate_task(client, ALICE, "mine")
    assert task["owner"] == "alice"
    task_id = task["id"]
    for method, path, body in [("get", f"/api/tasks/{task_id}", None),
                               ("get", f"/api/tasks/{task_id}/events", None),
                               ("head", f"/api/tasks/{task_id}/events", None),
                               ("post", f"/api/tasks/{task_id}/cancel", None),
                               ("post", "/api/tickets", {"task_id": task_id})]:
        rv = getattr(client, method)(path, json=body, headers=as_(BOB))
        assert rv.status_code == 404, (method, path)
        if method != "head":
            assert rv.json["error"]["code"] == "not_found"
    assert client.get("/api/tasks", headers=as_(BOB)).json["tasks"] == []
    assert [t["id"] for t in client.get("/api/tasks", headers=as_(ALICE)).json["tasks"]] == [task_id]
    running = client.get("/api/tasks?status=queued", headers=as_(BOB)).json["tasks"] + \
        client.get("/api/tasks?status=running", headers=as_(BOB)).json["tasks"]
    assert running == []
    assert client.post(f"/api/tasks/{task_id}/cancel", headers=as_(ALICE)).status_code == 202


def test_without_a_user_token_nothing_opens(client):
    assert client.get("/api/tasks").status_code == 401
    assert client.get("/api/tasks", headers=as_("not-a-user-token-at-all")).status_code == 401
    # The token never travels in a URL in this mode: streams take tickets.
    task_id = gate_task(client, ALICE, "url")["id"]
    rv = client.get(f"/api/tasks/{task_id}/events?token={ALICE}")
    assert rv.status_code == 401
    client.post(f"/api/tasks/{task_id}/cancel", headers=as_(ALICE))


def test_idempotency_keys_are_each_users_own(client):
    def post(token: str):
        return client.post("/api/tasks", json={"name": "demo", "params": {"steps": 1, "delay": 0}},
                           headers={**as_(token), "Idempotency-Key": "same-key"})
    first, twin, other = post(ALICE), post(ALICE), post(BOB)
    assert (first.status_code, twin.status_code, other.status_code) == (202, 200, 202)
    assert twin.json["id"] == first.json["id"] != other.json["id"]
    assert other.json["owner"] == "bob"


def test_the_page_signs_in_with_a_cookie_and_sends_the_csrf_header(client):
    assert client.post("/api/session", json={"token": "wrong-token-0123456789"}).status_code == 401
    rv = client.post("/api/session", json={"token": ALICE})
    assert rv.status_code == 200 and rv.json["user"] == "alice"
    cookie = rv.headers["Set-Cookie"]
    assert SESSION_COOKIE in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    csrf = rv.json["csrf_token"]
    assert client.get("/api/session").json == rv.json
    assert client.get("/api/tasks").status_code == 200

    body = {"name": "demo", "params": {"steps": 1, "delay": 0}}
    forged = client.post("/api/tasks", json=body)  # what a cross-site form could do
    assert forged.status_code == 403 and forged.json["error"]["code"] == "csrf_failed"
    assert client.post("/api/tasks", json=body, headers={"X-CSRF-Token": "guess"}).status_code == 403
    made = client.post("/api/tasks", json=body, headers={"X-CSRF-Token": csrf})
    assert made.status_code == 202 and made.json["owner"] == "alice"

    assert client.delete("/api/session").status_code == 403  # signing out needs it too
    assert client.delete("/api/session", headers={"X-CSRF-Token": csrf}).status_code == 204
    assert client.get("/api/tasks").status_code == 401


def test_a_ticket_opens_its_own_stream_and_nothing_else(client):
    mine = gate_task(client, ALICE, "t1", steps=1)["id"]
    other = gate_task(client, ALICE, "t2", steps=1)["id"]
    rv = client.post("/api/tickets", json={"task_id": mine}, headers=as_(ALICE))
    assert rv.status_code == 200
    ticket, url = rv.json["ticket"], rv.json["url"]
    assert url == f"/api/tasks/{mine}/events?ticket={ticket}" and ALICE not in url
    assert rv.json["expires_in"] == 300

    for method, path in [("get", f"/api/tasks/{other}/events?ticket={ticket}"),
                         ("get", f"/api/events?ticket={ticket}"),
                         ("get", f"/api/tasks/{mine}?ticket={ticket}"),
                         ("get", f"/api/tasks?ticket={ticket}"),
                         ("post", f"/api/tasks/{mine}/cancel?ticket={ticket}"),
                         ("get", f"/api/tasks/{mine}/events?ticket={ticket[:-2]}xx")]:
        assert getattr(client, method)(path).status_code == 401, path
    assert client.post("/api/tickets", json={"task_id": mine},
                       query_string={"ticket": ticket}).status_code == 401

    stream = TestStream(client.get(url))
    try:
        assert stream.response.status_code == 200
        stream.until_type("snapshot")
        GATES["t1:1"].set()
        assert stream.until_end()[-1].type == "done"
    finally:
        stream.close()
    client.post(f"/api/tasks/{other}/cancel", headers=as_(ALICE))


def test_a_stream_ends_with_ticket_expired_and_resumes_with_a_new_ticket(make_app):
    client = make_app(**USERS, TASKS_TICKET_TTL=0.5, TASKS_HEARTBEAT=5).test_client()
    task_id = gate_task(client, ALICE, "exp", steps=3)["id"]
    url = client.post("/api/tickets", json={"task_id": task_id}, headers=as_(ALICE)).json["url"]
    stream = TestStream(client.get(url))
    try:
        stream.until_type("snapshot")
        GATES["exp:1"].set()
        stream.until(lambda events: any(e.type == "progress" for e in events))
        events = stream.until_end(timeout=5)  # the ticket ends it, not the task
    finally:
        stream.close()
    assert events[-1].type == "ticket-expired"
    assert b"\n\nevent: ticket-expired\ndata: " in stream.raw  # no id: of its own
    assert '"reason":"ticket_expired"' in events[-1].data and '"ts":' in events[-1].data
    last_id = events[-1].id  # as EventSource keeps it: the last real event's
    assert last_id == events[-2].id

    expired = client.get(url, headers={"Last-Event-ID": last_id})
    assert expired.status_code == 401 and expired.json["error"]["code"] == "ticket_expired"

    GATES["exp:2"].set()
    GATES["exp:3"].set()
    fresh = client.post("/api/tickets", json={"task_id": task_id}, headers=as_(ALICE)).json["url"]
    resumed = TestStream(client.get(f"{fresh}&lastEventId={last_id}"))
    try:
        rest = resumed.until_type("done")
    finally:
        resumed.close()
    assert rest[0].type != "snapshot" and int(rest[0].id) > int(last_id)
    assert [e.type for e in rest][-1] == "done"


def test_the_all_tasks_stream_shows_each_user_only_their_tasks(client):
    before = gate_task(client, ALICE, "g0")["id"]
    ticket = client.post("/api/tickets", json={}, headers=as_(BOB)).json
    assert ticket["url"].startswith("/api/events?ticket=")
    bobs = TestStream(client.get(ticket["url"]))
    alices = TestStream(client.get("/api/events", headers=as_(ALICE)))
    try:
        assert '"tasks":[]' in bobs.until_type("snapshot")[0].data
        assert before in alices.until_type("snapshot")[0].data
        theirs = gate_task(client, ALICE, "g1", steps=1)["id"]
        own = gate_task(client, BOB, "g2", steps=1)["id"]
        GATES["g1:1"].set()
        GATES["g2:1"].set()
        alices.until(lambda events: sum(e.type == "done" for e in events) >= 1)
        bobs.until(lambda events: any(e.type == "done" for e in events))
    finally:
        bobs.close()
        alices.close()
    assert {_task_of(e) for e in bobs.events if e.type != "snapshot"} == {own}
    assert theirs in {_task_of(e) for e in alices.events if e.type != "snapshot"} <= {before, theirs}
    assert theirs not in bobs.raw.decode()
    # Resuming by id replays only one's own events too.
    first_id = bobs.events[0].id
    replay = client.get(f"/api/events?lastEventId={first_id}", headers=as_(BOB))
    resumed = TestStream(replay)
    try:
        resumed.until_type("done")
    finally:
        resumed.close()
    assert theirs not in resumed.raw.decode() and own in resumed.raw.decode()
    client.post(f"/api/tasks/{before}/cancel", headers=as_(ALICE))


def _task_of(event) -> str:
    return json.loads(event.data)["task_id"]


def test_tickets_replace_the_shared_token_in_urls_too(make_app):
    client = make_app(TASKS_API_TOKEN="shared-token-0123456789").test_client()
    task_id = start(client, "shared-token-0123456789", steps=1, delay=0)["id"]
    assert client.post("/api/tickets", json={"task_id": task_id}).status_code == 401
    url = client.post("/api/tickets", json={"task_id": task_id},
                      headers=as_("shared-token-0123456789")).json["url"]
    assert "shared-token" not in url
    rv = client.get(url)
    assert rv.status_code == 200 and b"event: done" in rv.data
    no_sessions = client.get("/api/session", headers=as_("shared-token-0123456789"))
    assert no_sessions.status_code == 404  # sessions are for per-user mode


def test_a_new_token_ends_old_sessions():
    old = Auth({"TASKS_API_TOKEN": None, "TASKS_USER_TOKENS": {"alice": ALICE},
                "TASKS_SECRET_KEY": "k" * 32, "TASKS_TICKET_TTL": 60.0,
                "TASKS_SESSION_MAX_AGE": 60.0})
    cookie, _ = old.sign_in(ALICE)
    assert old.read_session(cookie) is not None
    rotated = Auth({"TASKS_API_TOKEN": None, "TASKS_USER_TOKENS": {"alice": "a-new-token-0123456789"},
                    "TASKS_SECRET_KEY": "k" * 32, "TASKS_TICKET_TTL": 60.0,
                    "TASKS_SESSION_MAX_AGE": 60.0})
    assert rotated.read_session(cookie) is None
    assert rotated.read_session(cookie[:-3] + "abc") is None


@pytest.mark.parametrize("value, fragment", [
    ("alice", "write each user as name:token"),
    ("alice:short", "shorter than 16"),
    (f"alice:{ALICE},alice:{BOB}", "listed twice"),
    (f"alice:{ALICE},bob:{ALICE}", "share one token"),
    (f"al ice:{ALICE}", "write each user as name:token"),
    (ALICE, "write each user as name:token"),  # no ':': all of it may be a token
])
def test_bad_user_tokens_stop_start_up_without_echoing_them(tmp_path, value, fragment):
    with pytest.raises(ConfigError) as caught:
        create_app({"TASKS_DB": str(tmp_path / "t.db"), "TASKS_USER_TOKENS": value})
    assert fragment in str(caught.value)
    assert ALICE not in str(caught.value) and BOB not in str(caught.value)


def test_the_shared_token_and_user_tokens_do_not_mix(tmp_path):
    with pytest.raises(ConfigError, match="set only one"):
        create_app({"TASKS_DB": str(tmp_path / "t.db"), "TASKS_API_TOKEN": "x" * 20,
                    "TASKS_USER_TOKENS": f"alice:{ALICE}"})
    with pytest.raises(ConfigError, match="TASKS_SECRET_KEY"):
        create_app({"TASKS_DB": str(tmp_path / "t.db"), "TASKS_BACKEND": "redis",
                    "TASKS_USER_TOKENS": f"alice:{ALICE}"})


def test_no_other_sites_page_may_change_anything_in_any_mode(make_app):
    for client in (make_app().test_client(), make_app(**USERS).test_client()):
        cross = {"Sec-Fetch-Site": "cross-site", "Authorization": f"Bearer {ALICE}"}
        rv = client.post("/api/tasks", json={"name": "demo"}, headers=cross)
        assert rv.status_code == 403 and rv.json["error"]["code"] == "csrf_failed"
        assert client.post("/api/session", json={"token": ALICE}, headers=cross).status_code == 403
        same = {**cross, "Sec-Fetch-Site": "same-origin"}
        made = client.post("/api/tasks", json={"name": "demo", "params": {"steps": 1, "delay": 0}},
                           headers=same)
        assert made.status_code == 202
