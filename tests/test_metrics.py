"""``/metrics``: Prometheus text, read from the engine at scrape time."""
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import TestStream, wait_for


def scrape(client, **kwargs):
    rv = client.get("/metrics", **kwargs)
    assert rv.status_code == 200, rv.data
    assert rv.headers["Content-Type"].startswith("text/plain; version=")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(rv.get_data(as_text=True))
            for s in family.samples}


def test_metrics_count_tasks_streams_events_and_durations(client):
    before = scrape(client)
    assert before[("taskstream_tasks", (("status", "running"),))] == 0
    assert before[("taskstream_streams_open", ())] == 0
    task_id = client.post("/api/tasks", json={"name": "demo", "params": {
        "steps": 3, "delay": 0.01}}).json["id"]
    stream = TestStream(client.get(f"/api/tasks/{task_id}/events"))
    try:
        stream.read()
        assert scrape(client)[("taskstream_streams_open", ())] == 1
        stream.until_end()
    finally:
        stream.close()
    wait_for(lambda: client.get(f"/api/tasks/{task_id}").json["status"] == "succeeded")
    after = scrape(client)
    assert after[("taskstream_tasks_created_total", ())] == 1
    assert after[("taskstream_tasks_finished_total", (("status", "succeeded"),))] == 1
    assert after[("taskstream_streams_open", ())] == 0
    assert after[("taskstream_streams_opened_total", ())] == 1
    assert after[("taskstream_events_emitted_total", (("type", "done"),))] == 1
    assert after[("taskstream_events_emitted_total", (("type", "log"),))] == 2
    assert after[("taskstream_progress_reports_total", ())] >= 3
    assert after[("taskstream_events_delivered_total", ())] >= 1
    assert after[("taskstream_task_duration_seconds_count",
                  (("name", "demo"), ("status", "succeeded")))] == 1
    assert after[("taskstream_task_duration_seconds_sum",
                  (("name", "demo"), ("status", "succeeded")))] > 0.02


def test_two_apps_in_one_process_keep_their_own_figures(make_app):
    one, two = make_app().test_client(), make_app().test_client()
    one.post("/api/tasks", json={"name": "demo", "params": {"steps": 1, "delay": 0}})
    assert scrape(one)[("taskstream_tasks_created_total", ())] == 1
    assert scrape(two)[("taskstream_tasks_created_total", ())] == 0


def test_metrics_stay_open_under_the_api_token_unless_they_have_their_own(make_app):
    assert make_app(TASKS_API_TOKEN="api").test_client().get("/metrics").status_code == 200
    client = make_app(TASKS_METRICS_TOKEN="scrape").test_client()
    refused = client.get("/metrics")
    assert refused.status_code == 401 and refused.json["error"]["code"] == "unauthorized"
    assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    scrape(client, headers={"Authorization": "bearer scrape"})


def test_readyz_is_503_while_shutting_down_and_healthz_stays_200(app, client):
    assert client.get("/readyz").json == {"status": "ready"}
    app.extensions["tasks"].shutdown(0)
    rv = client.get("/readyz")
    assert rv.status_code == 503 and rv.json["status"] == "shutting_down"
    assert client.get("/healthz").status_code == 200


def test_readyz_is_503_while_redis_is_unreachable(request, make_app, backend):
    if backend["TASKS_BACKEND"] != "redis":
        pytest.skip("the memory backend has nothing to reach")
    server = request.getfixturevalue("redis_server")
    client = make_app().test_client()
    server.stop()
    try:
        rv = client.get("/readyz")
        assert rv.status_code == 503 and rv.json["status"] == "backend_unavailable"
        assert "Retry-After" in rv.headers
        assert client.get("/healthz").status_code == 200
    finally:
        server.start()
    wait_for(lambda: client.get("/readyz").status_code == 200, what="ready again")
