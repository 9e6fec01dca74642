"""Security headers on every response, and CORS only for listed origins."""
import pytest

from tasks.security import CSP
from tests.conftest import TestStream
from tests.test_limits import let_readers_connect

ORIGINS = "https://a.example, https://b.example"


def assert_hardened(rv):
    assert rv.headers["X-Content-Type-Options"] == "nosniff"
    assert rv.headers["X-Frame-Options"] == "DENY"
    assert "Content-Security-Policy" in rv.headers
    assert "Access-Control-Allow-Credentials" not in rv.headers


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/api/tasks",
                                  "/api/tasks/nope", "/nope", "/"])
def test_every_response_carries_the_security_headers(client, path):
    assert_hardened(client.get(path))


def test_api_answers_get_the_strict_policy_and_no_referrer(client):
    rv = client.get("/api/tasks")
    assert rv.headers["Content-Security-Policy"] == CSP
    assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
    assert rv.headers["Referrer-Policy"] == "no-referrer"


def test_streams_carry_the_headers_too(client):
    stream = TestStream(client.get("/api/events"))
    try:
        assert_hardened(stream.response)
        assert stream.read().startswith(b"retry:")
    finally:
        let_readers_connect()
        stream.close()


def test_cors_is_off_by_default(client):
    rv = client.get("/api/tasks", headers={"Origin": "https://a.example"})
    assert "Access-Control-Allow-Origin" not in rv.headers


def test_listed_origins_may_read_api_gets_and_streams(make_app):
    client = make_app(TASKS_CORS_ORIGINS=ORIGINS).test_client()
    rv = client.get("/api/tasks", headers={"Origin": "https://b.example"})
    assert rv.headers["Access-Control-Allow-Origin"] == "https://b.example"
    assert "Origin" in rv.headers["Vary"]
    stream = TestStream(client.get("/api/events", headers={"Origin": "https://a.example"}))
    try:
        assert stream.response.headers["Access-Control-Allow-Origin"] == "https://a.example"
        assert stream.read().startswith(b"retry:")
    finally:
        let_readers_connect()
        stream.close()
    other = client.get("/api/tasks", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    post = client.post("/api/tasks", json={"name": "demo"}, headers={"Origin": "https://a.example"})
    assert "Access-Control-Allow-Origin" not in post.headers
    page = client.get("/", headers={"Origin": "https://a.example"})
    assert "Access-Control-Allow-Origin" not in page.headers


def test_preflights_for_gets_are_answered_before_the_token_check(make_app):
    client = make_app(TASKS_CORS_ORIGINS=ORIGINS, TASKS_API_TOKEN="t").test_client()
    rv = client.options("/api/events", headers={
        "Origin": "https://a.example", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization, last-event-id"})
    assert rv.status_code == 204
    assert rv.headers["Access-Control-Allow-Origin"] == "https://a.example"
    assert "Authorization" in rv.headers["Access-Control-Allow-Headers"]
    assert "Last-Event-ID" in rv.headers["Access-Control-Allow-Headers"]
    post = client.options("/api/tasks", headers={
        "Origin": "https://a.example", "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in post.headers
    evil = client.options("/api/events", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
    assert "Access-Control-Allow-Origin" not in evil.headers
    # the real request still needs the token
    assert client.get("/api/tasks", headers={"Origin": "https://a.example"}).status_code == 401
