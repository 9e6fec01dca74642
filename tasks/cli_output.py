"""How ``tasks run`` and ``tasks watch`` show a task: a live rich bar on a
terminal, plain lines when piped, JSON lines with ``--json``.

Each output gets the events in order and the final record; notes (hints,
errors) go to stderr so stdout stays clean for pipes and ``--json``.
"""
from __future__ import annotations

import json
import sys
import time
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress as Bar, ProgressColumn, TaskID, TextColumn
from rich.progress import Task as BarTask
from rich.text import Text

from .client import Done, Log, Progress, Snapshot, Status, TaskEvent, event_to_json

#: Plain output prints at most one progress line per this many seconds
#: (CI logs stay short); the newest one is always printed before anything else.
PLAIN_PROGRESS_EVERY = 0.5


class Output:
    """The shared shape: override what a kind of output shows."""

    def __enter__(self) -> "Output":
        return self

    def __exit__(self, *exc: object) -> None:
        self.pause()

    def started(self, record: dict[str, Any]) -> None:
        click.echo(f"started {record['name']} task {record['id']}", err=True)

    def event(self, event: TaskEvent) -> None:
        """One event as it arrives."""

    def finished(self, record: dict[str, Any]) -> None:
        self.pause()
        click.echo(outcome_line(record), err=record["status"] != "succeeded")

    def note(self, text: str) -> None:
        click.echo(text, err=True)

    def pause(self) -> None:
        """Stop live drawing (before a prompt, or at the end)."""

    def resume(self) -> None:
        """Draw again after ``pause``."""


def make_output(*, as_json: bool) -> Output:
    if as_json:
        return JsonOutput()
    if sys.stdout.isatty():
        return BarOutput()
    return PlainOutput()


def outcome_line(record: dict[str, Any]) -> str:
    """The last line: how the task ended, with its result or error."""
    status = record["status"]
    if status == "succeeded":
        return f"succeeded: {json.dumps(record.get('result'))}"
    error = record.get("error") or {}
    detail = ": ".join(x for x in (error.get("type"), error.get("message")) if x)
    return f"Error: task {record['id']} {status}" + (f": {detail}" if detail else "")


def format_rate(rate: float | None) -> str:
    if rate is None:
        return "-/s"
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if rate >= size:
            return f"{rate / size:.1f}{unit}/s"
    return f"{rate:.1f}/s"


def format_eta(eta: float | None) -> str:
    if eta is None:
        return "ETA -"
    seconds = int(round(eta))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"ETA {hours}:{minutes:02d}:{secs:02d}"
    return f"ETA {minutes}:{secs:02d}" if minutes else f"ETA {secs}s"


def progress_line(name: str, progress: dict[str, Any]) -> str:
    """``demo  45.0% 9/20 step 9 · 9.8/s · ETA 1s``."""
    percent = progress.get("percent")
    shown = f"{percent:5.1f}%" if percent is not None else "    ?%"
    current, total = progress.get("current"), progress.get("total")
    count = f"{_number(current)}/{_number(total)}" if total is not None else _number(current)
    message = f" {progress['message']}" if progress.get("message") else ""
    return (f"{name} {shown} {count}{message} · {format_rate(progress.get('rate'))} · "
            f"{format_eta(progress.get('eta'))}")


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _progress_of(event: Progress) -> dict[str, Any]:
    return {k: event.data.get(k) for k in ("current", "total", "percent", "message",
                                           "rate", "eta")}


class JsonOutput(Output):
    """One JSON object per line and event: ``{"id", "event", "data"}``."""

    def event(self, event: TaskEvent) -> None:
        click.echo(json.dumps(event_to_json(event), ensure_ascii=False))

    def finished(self, record: dict[str, Any]) -> None:
        if record["status"] != "succeeded":
            click.echo(outcome_line(record), err=True)


class PlainOutput(Output):
    """Lines for logs: progress (throttled), logs, status changes, outcome."""

    def __init__(self) -> None:
        self.name = "task"
        self._unprinted: str | None = None
        self._printed_at = 0.0

    def event(self, event: TaskEvent) -> None:
        if isinstance(event, Snapshot):
            self.name = event.record.get("name", self.name)
            click.echo(f"{self.name} {event.record['status']}")
            if event.record["progress"].get("current"):  # joined late: where it stands
                click.echo(progress_line(self.name, event.record["progress"]))
        elif isinstance(event, Progress):
            self._unprinted = progress_line(self.name, _progress_of(event))
            if time.monotonic() - self._printed_at >= PLAIN_PROGRESS_EVERY:
                self._flush()
        elif isinstance(event, Log):
            self._flush()
            click.echo(f"[{event.level}] {event.message}")
        elif isinstance(event, Status):
            self._flush()
            click.echo(f"{self.name} {event.status}")
        elif isinstance(event, Done):
            self._flush()

    def _flush(self) -> None:
        if self._unprinted is not None:
            click.echo(self._unprinted)
            self._unprinted, self._printed_at = None, time.monotonic()

    def pause(self) -> None:
        self._flush()


class _FieldColumn(ProgressColumn):
    """A column showing one of the bar task's fields, formatted."""

    def __init__(self, field: str, fmt: Any, style: str) -> None:
        super().__init__()
        self.field, self.fmt, self.style = field, fmt, style

    def render(self, task: BarTask) -> Text:
        return Text(self.fmt(task.fields.get(self.field)), style=self.style)


class BarOutput(Output):
    """A rich bar with percentage, count, rate, ETA and the latest message;
    log lines print above it. Redrawn on each event (no refresh thread: the
    ``--local`` engine runs gevent in this thread)."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self.bar = Bar(
            TextColumn("[bold]{task.description}"), BarColumn(),
            TextColumn("{task.percentage:>5.1f}%"),
            _FieldColumn("count", str, "cyan"),
            _FieldColumn("rate", format_rate, "green"),
            _FieldColumn("eta", format_eta, "yellow"),
            _FieldColumn("message", lambda m: m or "", "dim"),
            console=self.console, auto_refresh=False, transient=False)
        self.task: TaskID | None = None
        self.live = False

    def started(self, record: dict[str, Any]) -> None:
        self.console.print(f"started {record['name']} task [bold]{record['id']}[/]")

    def _ensure(self, name: str) -> TaskID:
        if self.task is None:
            self.task = self.bar.add_task(name, total=None, count="0", rate=None, eta=None,
                                          message="")
        self.resume()
        return self.task

    def event(self, event: TaskEvent) -> None:
        if isinstance(event, Snapshot):
            record = event.record
            task = self._ensure(record["name"])
            self.bar.update(task, description=f"{record['name']} {record['status']}")
            self._show(task, record["progress"])
        elif isinstance(event, Progress):
            self._show(self._ensure("task"), _progress_of(event))
        elif isinstance(event, Log):
            self.bar.console.print(f"[dim]{event.level}[/] {event.message}")
        elif isinstance(event, Status) and self.task is not None:
            name = self.bar.tasks[0].description.split()[0]
            self.bar.update(self.task, description=f"{name} {event.status}")
        elif isinstance(event, Done) and self.task is not None:
            self._show(self.task, event.record["progress"])
        self.bar.refresh()

    def _show(self, task: TaskID, progress: dict[str, Any]) -> None:
        current, total = progress.get("current") or 0, progress.get("total")
        count = f"{_number(current)}/{_number(total)}" if total is not None else _number(current)
        self.bar.update(task, completed=current, total=total, count=count,
                        rate=progress.get("rate"), eta=progress.get("eta"),
                        message=progress.get("message"))

    def finished(self, record: dict[str, Any]) -> None:
        self.pause()
        style = "green" if record["status"] == "succeeded" else "red"
        self.console.print(f"[{style}]{outcome_line(record)}[/]", markup=True, highlight=False)

    def note(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def pause(self) -> None:
        if self.live:
            self.bar.refresh()
            self.bar.stop()
            self.live = False

    def resume(self) -> None:
        if not self.live:
            self.bar.start()
            self.live = True
