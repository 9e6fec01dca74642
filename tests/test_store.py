"""Records outlive the process: SQLite, restarts, interrupted tasks."""
import pytest

from tests.conftest import wait_for
from tests.fixtures import GATES


def start(client, name, **params):
    return client.post("/api/tasks", json={"name": name, "params": params}).json["id"]


def test_finished_records_and_results_survive_a_restart(make_app):
    first = make_app()
    client = first.test_client()
    task_id = start(client, "demo", steps=2, delay=0)
    wait_for(lambda: client.get(f"/api/tasks/{task_id}").json["status"] == "succeeded")
    done_id = client.get(f"/api/tasks/{task_id}/events").data.split(b"id: ")[-1].split(b"\n")[0]
    first.extensions["tasks"].close()

    again = make_app().test_client()
    record = again.get(f"/api/tasks/{task_id}").json
    assert record["status"] == "succeeded" and record["result"] == {"steps": 2}
    assert [t["id"] for t in again.get("/api/tasks").json["tasks"]] == [task_id]
    body = again.get(f"/api/tasks/{task_id}/events").data.decode()
    assert body.index("event: snapshot") < body.index("event: done")
    assert f"id: {done_id.decode()}\nevent: done" in body, "done keeps its id after a restart"
    rv = again.get(f"/api/tasks/{task_id}/events", headers={"Last-Event-ID": done_id.decode()})
    assert rv.status_code == 204


# A crash copy of the SQLite file is the memory backend's dead worker; on Redis
# the other workers detect it (tests/test_redis.py, tests/live/test_redis.py).
@pytest.mark.parametrize("backend", ["memory"], indirect=True)
def test_tasks_left_running_by_a_dead_worker_come_back_interrupted(make_app, tmp_path):
    import shutil
    first = make_app()
    client = first.test_client()
    running = start(client, "t_gate", gate="dies")
    wait_for(lambda: client.get(f"/api/tasks/{running}").json["status"] == "running")
    first.extensions["tasks"].store.flush()
    # A copy of the database as a kill -9 would leave it: the task still running.
    shutil.copy(tmp_path / "tasks.sqlite3", tmp_path / "crashed.sqlite3")
    for suffix in ("-wal", "-shm"):
        if (tmp_path / f"tasks.sqlite3{suffix}").exists():
            shutil.copy(tmp_path / f"tasks.sqlite3{suffix}", tmp_path / f"crashed.sqlite3{suffix}")
    GATES["dies:1"].set()

    restarted = make_app(TASKS_DB=str(tmp_path / "crashed.sqlite3")).test_client()
    record = restarted.get(f"/api/tasks/{running}").json
    assert record["status"] == "interrupted" and record["finished_at"]
    assert record["error"]["type"] == "Interrupted"
    body = restarted.get(f"/api/tasks/{running}/events").data.decode()
    assert "event: done" in body and '"status":"interrupted"' in body


def test_shutdown_interrupts_running_and_queued_tasks(make_app):
    app = make_app(TASKS_MAX_RUNNING=1)
    client = app.test_client()
    running = start(client, "t_gate", gate="long")
    queued = start(client, "t_gate", gate="later")
    wait_for(lambda: client.get(f"/api/tasks/{running}").json["status"] == "running")
    app.extensions["tasks"].shutdown(grace=0.1)
    assert client.get(f"/api/tasks/{running}").json["status"] == "interrupted"
    queued_record = client.get(f"/api/tasks/{queued}").json
    assert queued_record["status"] == "interrupted" and queued_record["started_at"] is None
    rv = client.post("/api/tasks", json={"name": "demo"})
    assert rv.status_code == 503 and rv.headers["Retry-After"]
    assert client.get("/readyz").status_code == 503
