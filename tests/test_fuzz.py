"""Hostile input: random JSON bodies, params, headers, ids, ``Last-Event-ID``
values and query strings thrown at the API (hypothesis). Every answer is JSON
(2xx or 4xx), a 204, or a valid event stream; never a 500; and afterwards the
app still serves /healthz with no stream left open.
"""
from __future__ import annotations

import json
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import TestStream
from tests.sse_parser import SSEParser
from tests.test_limits import let_readers_connect

FUZZ = settings(max_examples=40, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

# Header values HTTP can carry: printable latin-1, no line breaks.
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=255,
                                    blacklist_characters="\x7f"), max_size=40)
json_scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
                | st.floats(allow_nan=False) | st.text(max_size=30))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)
param_names = st.sampled_from(["steps", "delay", "fail_at", "message", "folder", "limit"]) \
    | st.text(max_size=10)
task_names = st.sampled_from(["demo", "hash_files", "nope", ""]) | st.text(max_size=20) \
    | json_scalars
bodies = (st.fixed_dictionaries({"name": task_names},
                                optional={"params": st.dictionaries(param_names, json_values,
                                                                    max_size=5) | json_values})
          | st.dictionaries(st.text(max_size=8), json_values, max_size=4) | json_values)
event_ids = (st.integers(-5, 2**70).map(str) | header_text
             | st.sampled_from(["", " 1", "1e3", "0x10", "99999999999999999999", "-1"]))
task_ids = st.text(max_size=40).filter(lambda t: t not in ("", ".", ".."))
queries = st.dictionaries(st.sampled_from(["status", "limit", "lastEventId", "token", "ticket",
                                           "x"])
                          | st.text(max_size=6), st.text(max_size=20), max_size=3)
headers = st.dictionaries(
    st.sampled_from(["Last-Event-ID", "Idempotency-Key", "Authorization", "Accept",
                     "Origin", "Content-Type", "X-Forwarded-For", "Cache-Control",
                     "Cookie", "X-CSRF-Token", "Sec-Fetch-Site"]),
    header_text, max_size=4)


def fuzz_app(make_app, tmp_path):
    return make_app(TASKS_FILES_ROOT=str(tmp_path), TASKS_MAX_RUNNING=2, TASKS_MAX_QUEUED=20)


def check(rv) -> None:
    """The answer is a JSON 2xx/4xx, a 204, or a stream that starts right."""
    try:
        assert rv.status_code < 500, (rv.status_code, rv.get_data()[:300])
        if rv.request.method == "HEAD":
            return  # headers only
        if rv.mimetype == "text/event-stream":
            stream = TestStream(rv)
            first = stream.read()
            assert first.startswith(b"retry: "), first[:100]
            parser = SSEParser()
            parser.feed(first.decode())
            for event in parser.events:
                assert int(event.id) >= 0 and "ts" in json.loads(event.data)
        elif rv.mimetype == "text/plain" and rv.request.path == "/metrics":
            assert rv.get_data().startswith(b"# HELP ")
        elif rv.status_code != 204:
            assert rv.is_json, (rv.status_code, rv.get_data()[:300])
            if rv.status_code >= 400:
                assert set(rv.json["error"]) == {"code", "message"}
    finally:
        if rv.mimetype == "text/event-stream":
            let_readers_connect()
        rv.close()


def still_healthy(app, client) -> None:
    assert client.get("/healthz").status_code == 200
    assert app.extensions["tasks_limits"].streams.open == 0


def test_random_bodies_to_create_a_task(make_app, tmp_path):
    app = fuzz_app(make_app, tmp_path)
    client = app.test_client()

    @FUZZ
    @given(body=bodies, head=headers)
    def run(body, head):
        head = {k: v for k, v in head.items() if k != "Content-Type"}
        check(client.post("/api/tasks", data=json.dumps(body), headers=head,
                          content_type="application/json"))

    run()
    still_healthy(app, client)


def test_random_raw_bodies_and_content_types(make_app, tmp_path):
    app = fuzz_app(make_app, tmp_path)
    client = app.test_client()

    @FUZZ
    @given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode),
           content_type=st.sampled_from(["application/json", "text/plain", "",
                                         "application/json; charset=latin-1",
                                         "application/merge-patch+json"]) | header_text)
    def run(raw, content_type):
        check(client.post("/api/tasks", data=raw, content_type=content_type))

    run()
    still_healthy(app, client)


def test_random_ids_paths_queries_and_last_event_ids(make_app, tmp_path):
    app = fuzz_app(make_app, tmp_path)
    client = app.test_client()
    known = client.post("/api/tasks", json={"name": "demo", "params": {
        "steps": 2, "delay": 0}}).json["id"]

    @FUZZ
    @given(task_id=task_ids | st.just(known), suffix=st.sampled_from(
               ["", "/events", "/cancel"]), method=st.sampled_from(["GET", "POST", "HEAD",
                                                                   "DELETE", "PUT"]),
           query=queries, last_id=event_ids | st.none(), head=headers)
    def run(task_id, suffix, method, query, last_id, head):
        if last_id is not None:
            head = {**head, "Last-Event-ID": last_id}
        path = f"/api/tasks/{quote(task_id, safe='')}{suffix}"
        check(client.open(path, method=method, query_string=query, headers=head))

    run()
    still_healthy(app, client)


def test_random_queries_on_the_lists_and_the_global_stream(make_app, tmp_path):
    app = fuzz_app(make_app, tmp_path)
    client = app.test_client()

    @FUZZ
    @given(path=st.sampled_from(["/api/tasks", "/api/events", "/api/task-types", "/api/",
                                 "/api/nope", "/healthz", "/readyz", "/metrics"]),
           query=queries, head=headers)
    def run(path, query, head):
        check(client.get(path, query_string=query, headers=head))

    run()
    still_healthy(app, client)


def test_random_sign_ins_tickets_and_credentials_in_per_user_mode(make_app, tmp_path):
    token = "alice-token-0123456789"
    app = make_app(TASKS_USER_TOKENS=f"alice:{token}", TASKS_SECRET_KEY="k" * 32)
    client = app.test_client()
    known = client.post("/api/tasks", json={"name": "demo", "params": {"steps": 1, "delay": 0}},
                        headers={"Authorization": f"Bearer {token}"}).json["id"]

    @FUZZ
    @given(method=st.sampled_from(["GET", "POST", "DELETE"]),
           path=st.sampled_from(["/api/session", "/api/tickets", "/api/events",
                                 f"/api/tasks/{known}/events", f"/api/tasks/{known}"]),
           body=bodies | st.fixed_dictionaries({"token": json_values | st.just(token)})
           | st.fixed_dictionaries({"task_id": json_values | st.just(known)}),
           query=queries, head=headers)
    def run(method, path, body, query, head):
        check(client.open(path, method=method, data=json.dumps(body), query_string=query,
                          headers={"Content-Type": "application/json", **head}))

    run()
    still_healthy(app, client)
