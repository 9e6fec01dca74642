"""``GET /metrics``: the worker's figures in Prometheus text format.

Each app has its own ``CollectorRegistry`` (two apps in one process share
nothing). Almost every figure is read from the engine, the hub and the
limits at scrape time by one custom collector, so the hot paths only bump
integers; the one histogram, task durations, is observed as each task ends.
Figures are per worker: with several gunicorn workers, each scrape reaches
one of them (scrape each worker, or sum across them in Prometheus).
``TASKS_METRICS_TOKEN``, when set, guards this endpoint (``TASKS_API_TOKEN``
does not: like ``/healthz``, it stays open for the scraper).
"""
from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Iterator

from flask import Blueprint, Flask, Response, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .auth import bearer_token
from .errors import Unauthorized
from .records import Record

if TYPE_CHECKING:
    from .engine import TaskEngine
    from .limits import Limits

bp = Blueprint("tasks_metrics", __name__)

#: Task running times, seconds: from a blink to a few hours.
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600,
                    float("inf"))


class EngineCollector(Collector):
    """Reads the engine's counters and gauges at scrape time."""

    def __init__(self, engine: "TaskEngine", limits: "Limits | None") -> None:
        self._engine, self._limits = engine, limits

    def collect(self) -> Iterator[Metric]:
        engine, hub = self._engine, self._engine.hub
        tasks = GaugeMetricFamily(
            "taskstream_tasks", "Tasks on this worker now: running and queued.",
            labels=["status"])
        tasks.add_metric(["running"], engine.runner.running_count)
        tasks.add_metric(["queued"], engine.runner.queued_count)
        yield tasks
        created = CounterMetricFamily(
            "taskstream_tasks_created", "Tasks this worker accepted since it started.")
        created.add_metric([], engine.created_total)
        yield created
        finished = CounterMetricFamily(
            "taskstream_tasks_finished", "Tasks this worker ended since it started, by status.",
            labels=["status"])
        for status in ("succeeded", "failed", "cancelled", "interrupted"):
            finished.add_metric([status], engine.finished_total[status])
        yield finished
        yield _gauge("taskstream_subscribers", "Open stream subscribers on this worker.",
                     hub.subscriber_count())
        yield _gauge("taskstream_direct_streams",
                     "Open streams written straight to their sockets (the direct path).",
                     hub.direct_count())
        emitted = CounterMetricFamily(
            "taskstream_events_emitted", "status, log and done events tasks on this worker "
            "emitted.", labels=["type"])
        for event_type in ("status", "log", "done"):
            emitted.add_metric([event_type], engine.emitted_total[event_type])
        yield emitted
        reports = CounterMetricFamily(
            "taskstream_progress_reports", "Progress updates tasks reported (merged into "
            "fewer progress events before they are sent).")
        reports.add_metric([], engine.progress_reports)
        yield reports
        delivered = CounterMetricFamily(
            "taskstream_events_delivered", "Events handed to stream subscribers on this "
            "worker, one per subscriber.")
        delivered.add_metric([], getattr(hub, "events_delivered", 0))
        yield delivered
        if self._limits is not None:
            yield from self._collect_limits(self._limits)

    def _collect_limits(self, limits: "Limits") -> Iterator[Metric]:
        streams = limits.streams
        yield _gauge("taskstream_streams_open", "Open event streams (responses) on this worker.",
                     streams.open)
        opened = CounterMetricFamily("taskstream_streams_opened", "Event streams opened.")
        opened.add_metric([], streams.opened_total)
        yield opened
        merged = CounterMetricFamily(
            "taskstream_progress_merged", "Progress events merged (newest wins) for readers "
            "that could not keep up.")
        merged.add_metric([], streams.merged())
        yield merged
        refused = CounterMetricFamily(
            "taskstream_refused", "Requests refused by the overload limits.", labels=["limit"])
        refused.add_metric(["streams"], streams.refused_total)
        refused.add_metric(["create_rate"], limits.create.refused_total)
        yield refused


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class Metrics:
    """The app's registry and its task duration histogram."""

    def __init__(self, engine: "TaskEngine", limits: "Limits | None") -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(EngineCollector(engine, limits))
        self.durations = Histogram(
            "taskstream_task_duration_seconds", "Running time of tasks that ended, "
            "by task type and status (0 for tasks that never started).",
            ["name", "status"], registry=self.registry, buckets=DURATION_BUCKETS)
        engine.on_finish.append(self.observe)

    def observe(self, record: Record, seconds: float) -> None:
        self.durations.labels(record["name"], record["status"]).observe(seconds)


def init_app(app: Flask) -> Metrics:
    if "tasks_metrics" in app.extensions:
        raise RuntimeError("metrics are already set up on this app; call "
                           "metrics.init_app(app) once per app.")
    metrics = Metrics(app.extensions["tasks"], app.extensions.get("tasks_limits"))
    app.extensions["tasks_metrics"] = metrics
    app.register_blueprint(bp)
    return metrics


@bp.get("/metrics")
def scrape() -> Response:
    token = current_app.config.get("TASKS_METRICS_TOKEN")
    if token is not None:
        given = bearer_token(request.headers.get("Authorization"))
        if given is None or not hmac.compare_digest(given.encode(), token.encode()):
            raise Unauthorized("missing or wrong metrics token: send 'Authorization: Bearer "
                               "<TASKS_METRICS_TOKEN>'",
                               headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    metrics: Metrics = current_app.extensions["tasks_metrics"]
    return Response(generate_latest(metrics.registry), content_type=CONTENT_TYPE_LATEST)
