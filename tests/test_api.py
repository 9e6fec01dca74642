import logging
import re

import pytest

from tasks.records import new_task_id
from tests.conftest import wait_for
from tests.fixtures import GATES

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def start(client, name="demo", params=None, **kwargs):
    return client.post("/api/tasks", json={"name": name, "params": params or {}}, **kwargs)


def test_task_types_lists_the_built_in_types(client):
    names = [t["name"] for t in client.get("/api/task-types").json["task_types"]]
    assert {"demo", "primes", "hash_files"} <= set(names)


def test_starting_a_task_answers_202_with_the_record_and_location(client):
    rv = start(client, params={"steps": 2, "delay": 0})
    record = rv.json
    assert rv.status_code == 202
    assert rv.headers["Location"] == f"/api/tasks/{record['id']}"
    assert len(record["id"]) >= 21 and re.fullmatch(r"[A-Za-z0-9_-]+", record["id"])
    assert record["params"] == {"steps": 2, "delay": 0.0, "fail_at": None, "message": "step"}
    assert record["status"] == "queued" and record["started_at"] is None
    assert record["progress"] == {"current": 0, "total": None, "percent": None,
                                  "message": None, "rate": None, "eta": None}
    assert ISO.fullmatch(record["created_at"])
    assert list(record) == ["id", "name", "params", "status", "progress", "result", "error",
                            "created_at", "started_at", "finished_at"]


def test_a_task_runs_to_its_result(client):
    task_id = start(client, params={"steps": 3, "delay": 0}).json["id"]
    record = wait_for(lambda: (r := client.get(f"/api/tasks/{task_id}").json)
                      ["status"] == "succeeded" and r)
    assert record["result"] == {"steps": 3}
    assert record["progress"]["current"] == 3 and record["progress"]["percent"] == 100.0
    assert ISO.fullmatch(record["started_at"]) and ISO.fullmatch(record["finished_at"])


@pytest.mark.parametrize("body, kwargs, status, code, message", [
    (None, {"data": "{not json", "content_type": "application/json"}, 400, "bad_request",
     "not valid JSON"),
    (None, {"json": [1, 2]}, 400, "bad_request", "must be a JSON object"),
    (None, {"json": {"params": {}}}, 400, "bad_request", "name: required"),
    (None, {"json": {"name": "nope"}}, 400, "unknown_task_type", "unknown task type 'nope'"),
    (None, {"json": {"name": "demo", "params": {"steps": 0}}}, 400, "invalid_params",
     "params.steps: must be at least 1, got 0"),
    (None, {"json": {"name": "demo", "params": {"steps": 5_000_000}}}, 400, "invalid_params",
     "params.steps: must be at most 1000000, got 5000000"),
    (None, {"json": {"name": "demo", "extra": 1}}, 400, "bad_request", "extra: unknown field"),
    (None, {"data": "name=demo"}, 415, "unsupported_media_type", "JSON"),
])
def test_bad_requests_get_a_json_error_naming_the_problem(client, body, kwargs, status, code,
                                                          message):
    rv = client.post("/api/tasks", **kwargs)
    assert rv.status_code == status and rv.is_json
    assert rv.json["error"]["code"] == code
    assert message in rv.json["error"]["message"]


def test_a_body_over_the_limit_is_413(make_app):
    client = make_app(TASKS_MAX_BODY=100).test_client()
    rv = client.post("/api/tasks", json={"name": "demo", "params": {"message": "x" * 200}})
    assert rv.status_code == 413 and rv.json["error"]["code"]


def test_unknown_ids_paths_and_methods_are_json(client):
    assert client.get("/api/tasks/nope").status_code == 404
    assert client.get("/api/tasks/nope").json["error"]["code"] == "not_found"
    assert client.get("/api/nothing-here").json["error"]["code"] == "not_found"
    rv = client.delete("/api/tasks")
    assert rv.status_code == 405 and rv.is_json and "POST" in rv.headers["Allow"]
    assert client.post("/api/tasks/nope/cancel").status_code == 404
    assert client.get("/api/tasks/nope/events").status_code == 404


def test_an_unexpected_error_is_a_bare_json_500_and_the_traceback_is_logged(app, caplog):
    @app.get("/api/explode")
    def explode():
        raise RuntimeError("secret detail")

    with caplog.at_level(logging.ERROR):
        rv = app.test_client().get("/api/explode")
    assert rv.status_code == 500
    assert rv.json == {"error": {"code": "internal_error", "message": "internal server error"}}
    assert "secret detail" in caplog.text and "Traceback" in caplog.text


def test_listing_is_newest_first_filters_and_limits(client):
    ids = [start(client, params={"steps": 1, "delay": 0}).json["id"] for _ in range(3)]
    wait_for(lambda: all(client.get(f"/api/tasks/{i}").json["status"] == "succeeded"
                         for i in ids))
    assert [t["id"] for t in client.get("/api/tasks").json["tasks"]] == ids[::-1]
    assert [t["id"] for t in client.get("/api/tasks?limit=2").json["tasks"]] == ids[:0:-1]
    assert client.get("/api/tasks?status=running").json["tasks"] == []
    assert len(client.get("/api/tasks?status=succeeded").json["tasks"]) == 3
    for bad in ("limit=0", "limit=1001", "limit=x", "status=done"):
        rv = client.get(f"/api/tasks?{bad}")
        assert rv.status_code == 400, bad
        assert rv.json["error"]["message"].startswith(bad.split("=")[0])


def test_a_repeated_idempotency_key_returns_the_first_task(client, engine):
    headers = {"Idempotency-Key": "order-42"}
    first = start(client, params={"steps": 1, "delay": 0}, headers=headers)
    again = start(client, params={"steps": 1, "delay": 0}, headers=headers)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json["id"] == first.json["id"]
    wait_for(lambda: engine.runner.running_count == 0)
    assert len(client.get("/api/tasks").json["tasks"]) == 1


def test_concurrent_repeats_of_one_key_start_one_task(client, engine):
    import gevent
    jobs = [gevent.spawn(start, client, "demo", {"steps": 1, "delay": 0},
                         headers={"Idempotency-Key": "twice"}) for _ in range(5)]
    gevent.joinall(jobs, timeout=5)
    ids = {job.value.json["id"] for job in jobs}
    assert len(ids) == 1
    assert sorted(job.value.status_code for job in jobs) == [200, 200, 200, 200, 202]


def test_a_failing_task_reports_type_and_message_and_no_traceback(client, caplog):
    task_id = start(client, "t_raise", {"message": "disk on fire"}).json["id"]
    record = wait_for(lambda: (r := client.get(f"/api/tasks/{task_id}").json)
                      ["status"] == "failed" and r)
    assert record["error"] == {"type": "ValueError", "message": "disk on fire"}
    assert "Traceback" not in str(record)
    assert "Traceback" in caplog.text and task_id in caplog.text


def test_a_result_json_cannot_hold_fails_the_task_clearly(client):
    task_id = start(client, "t_bad_result").json["id"]
    record = wait_for(lambda: (r := client.get(f"/api/tasks/{task_id}").json)
                      ["status"] == "failed" and r)
    assert record["error"]["type"] == "TypeError"
    assert "not JSON-serialisable" in record["error"]["message"]


def test_the_queue_limit_answers_429_with_retry_after(make_app):
    client = make_app(TASKS_MAX_RUNNING=1, TASKS_MAX_QUEUED=2).test_client()
    accepted = [start(client, "t_gate", {"gate": f"q{i}"}).status_code for i in range(3)]
    rv = start(client, "t_gate", {"gate": "q3"})
    assert accepted == [202, 202, 202]
    assert rv.status_code == 429 and rv.json["error"]["code"] == "queue_full"
    assert rv.headers["Retry-After"].isdigit()
    statuses = [t["status"] for t in client.get("/api/tasks").json["tasks"]]
    assert sorted(statuses) == ["queued", "queued", "running"]
    for i in range(3):
        GATES[f"q{i}:1"].set()


def test_cancelling_a_queued_task_ends_it_at_once(make_app):
    client = make_app(TASKS_MAX_RUNNING=1).test_client()
    start(client, "t_gate", {"gate": "busy"})
    queued = start(client, "t_gate", {"gate": "never"}).json["id"]
    rv = client.post(f"/api/tasks/{queued}/cancel")
    assert rv.status_code == 202 and rv.json["status"] == "cancelled"
    assert rv.json["started_at"] is None
    assert client.post(f"/api/tasks/{queued}/cancel").status_code == 409
    GATES["busy:1"].set()


def test_cancelling_a_running_task_lets_it_clean_up(client):
    task_id = start(client, "t_cleanup", {"gate": "c"}).json["id"]
    wait_for(lambda: client.get(f"/api/tasks/{task_id}").json["status"] == "running")
    first = client.post(f"/api/tasks/{task_id}/cancel")
    assert first.status_code == 202 and first.json["status"] == "running"
    record = wait_for(lambda: (r := client.get(f"/api/tasks/{task_id}").json)
                      ["status"] == "cancelled" and r, timeout=1)
    assert record["finished_at"] and record["result"] is None
    assert client.post(f"/api/tasks/{task_id}/cancel").status_code == 409


def test_blocking_work_in_the_threadpool_leaves_the_loop_free(client):
    task_id = start(client, "t_threaded", {"seconds": 0.3}).json["id"]
    ticks = 0
    while client.get(f"/api/tasks/{task_id}").json["status"] != "succeeded":
        ticks += 1
        import gevent
        gevent.sleep(0.01)
        assert ticks < 500
    assert ticks > 5, "the event loop was blocked while the task slept in a thread"
    assert client.get(f"/api/tasks/{task_id}").json["result"] == "slept"


def test_primes_counts_the_primes_below_its_limit(client):
    task_id = start(client, "primes", {"limit": 2_500_001}).json["id"]
    record = wait_for(lambda: (r := client.get(f"/api/tasks/{task_id}").json)
                      ["status"] == "succeeded" and r, timeout=30)
    assert record["result"] == {"count": 183_072}  # pi(2,500,000): no prime at 2,500,000
    small = start(client, "primes", {"limit": 2}).json["id"]
    wait_for(lambda: client.get(f"/api/tasks/{small}").json["status"] == "succeeded")
    assert client.get(f"/api/tasks/{small}").json["result"] == {"count": 0}


def test_hash_files_hashes_a_folder_and_stays_inside_its_root(make_app, tmp_path):
    import hashlib
    (tmp_path / "data" / "sub").mkdir(parents=True)
    (tmp_path / "data" / "a.txt").write_bytes(b"hello")
    (tmp_path / "data" / "sub" / "b.bin").write_bytes(b"\0" * 3_000_000)
    client = make_app(TASKS_FILES_ROOT=str(tmp_path)).test_client()
    task_id = start(client, "hash_files", {"folder": "data"}).json["id"]
    record = wait_for(lambda: (r := client.get(f"/api/tasks/{task_id}").json)
                      ["status"] in ("succeeded", "failed") and r, timeout=10)
    tree = hashlib.sha256()
    tree.update(f"a.txt\0{hashlib.sha256(b'hello').hexdigest()}\n".encode())
    tree.update(f"sub/b.bin\0{hashlib.sha256(bytes(3_000_000)).hexdigest()}\n".encode())
    assert record["result"] == {"files": 2, "bytes": 3_000_005, "algorithm": "sha256",
                                "digest": tree.hexdigest()}
    outside = start(client, "hash_files", {"folder": "../.."}).json["id"]
    record = wait_for(lambda: (r := client.get(f"/api/tasks/{outside}").json)
                      ["status"] == "failed" and r)
    assert "outside TASKS_FILES_ROOT" in record["error"]["message"]


class TestToken:
    @pytest.fixture
    def client(self, make_app):
        return make_app(TASKS_API_TOKEN="s3cret").test_client()

    def test_api_calls_need_the_token(self, client):
        rv = client.get("/api/tasks")
        assert rv.status_code == 401 and rv.json["error"]["code"] == "unauthorized"
        assert client.get("/api/tasks", headers={"Authorization": "Bearer wrong"}
                          ).status_code == 401

    def test_bearer_is_case_insensitive_and_query_token_works(self, client):
        assert client.get("/api/tasks", headers={"Authorization": "bearer s3cret"}
                          ).status_code == 200
        assert client.get("/api/tasks?token=s3cret").status_code == 200

    def test_the_page_and_health_stay_open(self, client):
        assert client.get("/").status_code == 200
        assert client.get("/healthz").status_code == 200


def test_task_ids_are_url_safe_128_bits_that_never_look_like_an_option():
    ids = {new_task_id() for _ in range(5000)}  # a '-' first would come ~80 times
    assert len(ids) == 5000
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", task_id) for task_id in ids)
    assert not [task_id for task_id in ids if task_id.startswith("-")]
