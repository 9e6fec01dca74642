from tests.live.server import StreamReader


def test_a_demo_task_streams_to_done(live):
    record = live.start_task(steps=5, delay=0.05)
    with StreamReader(live.url, f"/api/tasks/{record['id']}/events") as stream:
        assert stream.status == 200
        events = stream.until_done()
        stream.until_end()
    assert events[0].type == "snapshot"
    assert events[-1].type == "done" and events[-1].json["status"] == "succeeded"
    assert [e.json["current"] for e in events if e.type == "progress"][-1] == 5
