"""``flask --app server tasks ...``: start, follow, list and cancel tasks from
a terminal, against a server (``--url``) or in this process (``run --local``).

Output follows where it goes: a live rich progress bar on a terminal, plain
lines when piped (CI logs), one JSON event per line with ``--json``. ``run``
and ``watch`` exit with the task's outcome (see ``EXIT_CODES``), so scripts
can branch on it.
"""
from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol

import click

from .client import (Conflict, Done, TaskClient, TaskEvent, TaskstreamError,
                     decode_stream, parse_event)

if TYPE_CHECKING:  # rich loads only when a command shows progress, not in the server
    from .cli_output import Output

#: How ``run`` and ``watch`` exit, by the task's final status.
EXIT_CODES = {"succeeded": 0, "failed": 1, "interrupted": 3, "cancelled": 130}
EXIT_SERVER_ERROR = 4     # could not start or follow the task at all
EXIT_CTRL_C = 130         # like a shell: 128 + SIGINT

DEFAULT_URL = "http://127.0.0.1:8000"

tasks_cli = click.Group("tasks", help="Start, follow and inspect Taskstream tasks.")


class TaskSource(Protocol):
    """What the commands need: a server (``TaskClient``) or ``LocalTasks``."""

    def task_types(self) -> list[dict[str, Any]]: ...
    def start(self, name: str, params: dict[str, Any]) -> dict[str, Any]: ...
    def cancel(self, task_id: str) -> dict[str, Any]: ...
    def events(self, task_id: str, *,
               last_event_id: int | None = None) -> Iterator[TaskEvent]: ...
    def close(self) -> None: ...


_TOKEN_HELP = "API token, or your own in per-user mode (default: $TASKS_API_TOKEN)."


def server_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--url`` and ``--token``, from the environment when not given."""
    command = click.option("--token", envvar="TASKS_API_TOKEN", default=None,
                           help=_TOKEN_HELP)(command)
    return click.option("--url", envvar="TASKS_URL", default=DEFAULT_URL, show_default=True,
                        help="The server (default: $TASKS_URL, else the one shown).")(command)


def _client(url: str, token: str | None) -> TaskClient:
    return TaskClient(url, token=token)


def _fail(message: str, code: int = EXIT_SERVER_ERROR) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


# -- types, list, cancel ---------------------------------------------------------

@tasks_cli.command("types")
@server_options
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
def types_command(url: str, token: str | None, as_json: bool) -> None:
    """List the task types and their parameters."""
    try:
        types = _client(url, token).task_types()
    except TaskstreamError as exc:
        _fail(str(exc))
    if as_json:
        click.echo(json.dumps({"task_types": types}, indent=2))
        return
    for task_type in types:
        click.echo(f"{task_type['name']}: {task_type.get('description') or task_type['title']}")
        for name, schema in task_type["params"].items():
            click.echo(f"    {name}  {describe_param(schema)}")


def describe_param(schema: dict[str, Any]) -> str:
    """One line: type, range, default and description of a parameter."""
    kind = str(schema["type"]) + (" or null" if schema.get("nullable") else "")
    bounds = ""
    if "minimum" in schema or "maximum" in schema:
        bounds = f" {schema.get('minimum', '')}..{schema.get('maximum', '')}"
    if "maxLength" in schema:
        bounds = f" up to {schema['maxLength']} chars"
    default = " (required)" if schema.get("required") else \
        f" (default {json.dumps(schema.get('default'))})"
    text = schema.get("description")
    return kind + bounds + default + (f": {text}" if text else "")


@tasks_cli.command("list")
@server_options
@click.option("--status", default=None, help="Only tasks with this status.")
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One record per line, as JSON.")
def list_command(url: str, token: str | None, status: str | None, limit: int,
                 as_json: bool) -> None:
    """List tasks, newest first."""
    try:
        records = _client(url, token).list(status=status, limit=limit)
    except TaskstreamError as exc:
        _fail(str(exc))
    for record in records:
        if as_json:
            click.echo(json.dumps(record))
            continue
        percent = record["progress"].get("percent")
        shown = f"{percent:5.1f}%" if percent is not None else "     -"
        click.echo(f"{record['id']}  {record['name']:<12} {record['status']:<11} {shown}  "
                   f"{record['created_at']}")


@tasks_cli.command("cancel")
@server_options
@click.argument("task_id")
def cancel_command(url: str, token: str | None, task_id: str) -> None:
    """Ask a task to stop."""
    try:
        record = _client(url, token).cancel(task_id)
    except Conflict:
        _fail(f"task {task_id} has already finished; nothing to cancel", 1)
    except TaskstreamError as exc:
        _fail(str(exc))
    click.echo(f"cancel requested for {task_id} ({record['name']}, was {record['status']})")


# -- run and watch -----------------------------------------------------------------

@tasks_cli.command("run")
@click.argument("name")
@click.option("--param", "-p", "pairs", multiple=True, metavar="KEY=VALUE",
              help="A task parameter; repeat for more. Values follow the type's schema "
                   "(see `tasks types`); `null` where allowed.")
@server_options
@click.option("--local", is_flag=True, help="Run the task in this process, without a server.")
@click.option("--json", "as_json", is_flag=True, help="Print each event as one JSON line.")
@click.option("--cancel-on-interrupt", is_flag=True,
              help="On Ctrl-C cancel the task without asking.")
def run_command(name: str, pairs: tuple[str, ...], url: str, token: str | None, local: bool,
                as_json: bool, cancel_on_interrupt: bool) -> None:
    """Start a task and follow its progress to the end.

    Exits 0 when it succeeds, 1 when it fails, 3 when the server's worker
    stopped it, 130 when it was cancelled or on Ctrl-C, 4 when the server
    could not be reached.
    """
    from .cli_output import make_output

    source: TaskSource = LocalTasks() if local else _client(url, token)
    try:
        try:
            params = parse_params(source.task_types(), name, pairs)
            record = source.start(name, params)
        except TaskstreamError as exc:
            _fail(str(exc))
        output = make_output(as_json=as_json)
        output.started(record)
        code = _follow(source, record["id"], output, ctrl_c=_ctrl_c_policy(
            local=local, cancel_on_interrupt=cancel_on_interrupt, task_id=record["id"]))
    finally:
        source.close()
    sys.exit(code)


@tasks_cli.command("watch")
@click.argument("task_id")
@server_options
@click.option("--json", "as_json", is_flag=True, help="Print each event as one JSON line.")
def watch_command(task_id: str, url: str, token: str | None, as_json: bool) -> None:
    """Follow a running task's progress (Ctrl-C stops watching, not the task)."""
    from .cli_output import make_output

    sys.exit(_follow(_client(url, token), task_id, make_output(as_json=as_json),
                     ctrl_c=lambda source, output: False))


def _ctrl_c_policy(*, local: bool, cancel_on_interrupt: bool, task_id: str
                   ) -> Callable[[TaskSource, Output], bool]:
    """Decides, on Ctrl-C, whether to cancel the task."""
    def decide(source: TaskSource, output: Output) -> bool:
        if local or cancel_on_interrupt:
            return True  # a local task dies with this process anyway: end it cleanly
        if not (sys.stdin.isatty() and sys.stderr.isatty()):
            return False  # nobody to ask: leave it running
        try:
            return click.confirm(f"\nCancel task {task_id}?", default=True, err=True)
        except click.Abort:  # a second Ctrl-C: no
            return False
    return decide


def _follow(source: TaskSource, task_id: str, output: Output, *,
            ctrl_c: Callable[[TaskSource, Output], bool]) -> int:
    """Show the task's events until ``done``; the exit code."""
    final: dict[str, Any] | None = None
    shown: list[int] = []  # ids of the events shown: after Ctrl-C, go on from the last
    try:
        with output:
            try:
                final = _read(source, task_id, output, shown)
            except KeyboardInterrupt:
                output.pause()
                if not ctrl_c(source, output):
                    output.note(f"task {task_id} is still running; follow it with "
                                f"`flask --app server tasks watch {task_id}`")
                    return EXIT_CTRL_C
                try:
                    source.cancel(task_id)
                except Conflict:
                    pass  # it finished meanwhile: show how
                output.note(f"cancelling task {task_id}...")
                output.resume()
                final = _read(source, task_id, output, shown)
    except KeyboardInterrupt:
        return EXIT_CTRL_C
    except TaskstreamError as exc:
        output.note(f"Error: {exc}")
        return EXIT_SERVER_ERROR
    if final is None:  # already past done (204): nothing more to show
        return 0
    output.finished(final)
    return EXIT_CODES.get(final["status"], 1)


def _read(source: TaskSource, task_id: str, output: Output,
          shown: list[int]) -> dict[str, Any] | None:
    for event in source.events(task_id, last_event_id=shown[-1] if shown else None):
        shown.append(event.id)
        output.event(event)
        if isinstance(event, Done):
            return event.record
    return None


# -- parameters ----------------------------------------------------------------------

_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def parse_params(task_types: list[dict[str, Any]], name: str,
                 pairs: tuple[str, ...]) -> dict[str, Any]:
    """``key=value`` pairs typed by the task type's schema from /api/task-types."""
    by_name = {t["name"]: t for t in task_types}
    if name not in by_name:
        raise click.BadParameter(f"unknown task type {name!r}; known: {', '.join(by_name)}",
                                 param_hint="NAME")
    schema = by_name[name]["params"]
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep:
            raise click.BadParameter(f"{pair!r}: write it as key=value, e.g. steps=10",
                                     param_hint="--param")
        if key not in schema:
            raise click.BadParameter(f"{key!r}: {name} takes {', '.join(schema) or 'none'}",
                                     param_hint="--param")
        params[key] = parse_value(key, raw, schema[key])
    return params


def parse_value(key: str, raw: str, schema: dict[str, Any]) -> Any:
    """One value as its schema's type; ``null`` where the schema allows it."""
    kind = schema.get("type")
    if raw == "null" and (schema.get("nullable") or kind != "string"):
        if not schema.get("nullable"):
            raise click.BadParameter(f"{key}: cannot be null; give a {kind}",
                                     param_hint="--param")
        return None
    try:
        if kind == "integer":
            return int(raw)
        if kind == "number":
            number = float(raw)
            return int(number) if number.is_integer() and "." not in raw else number
    except ValueError:
        raise click.BadParameter(f"{key}={raw!r}: expected {'an integer' if kind == 'integer' else 'a number'}",
                                 param_hint="--param") from None
    if kind == "boolean":
        if raw.lower() not in _BOOLEANS:
            raise click.BadParameter(f"{key}={raw!r}: expected true or false",
                                     param_hint="--param")
        return _BOOLEANS[raw.lower()]
    return raw


# -- running in this process -----------------------------------------------------------

class LocalTasks:
    """The engine of the app the ``flask`` command loaded, used directly:
    ``run --local`` runs a task in this process (gevent in the main thread, no
    monkey patching needed, as the task code only sleeps through gevent)."""

    def __init__(self) -> None:
        from flask import current_app

        from .engine import TaskEngine

        self.engine: TaskEngine = current_app.extensions["tasks"]
        self._on_sigint = _deliver_ctrl_c_to_this_greenlet()

    def task_types(self) -> list[dict[str, Any]]:
        return [t.describe() for t in self.engine.task_types()]

    def start(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        from .errors import APIError

        try:
            return self.engine.start(name, params)[0]
        except APIError as exc:
            raise TaskstreamError(exc.message, status=exc.status, code=exc.code) from None

    def cancel(self, task_id: str) -> dict[str, Any]:
        from .errors import TaskFinished

        try:
            return self.engine.cancel(task_id)
        except TaskFinished as exc:
            raise Conflict(exc.message, status=409, code=exc.code) from None

    def close(self) -> None:
        """Stop the engine: its records reach the store before the process ends."""
        self.engine.close()
        self._on_sigint.cancel()

    def events(self, task_id: str, *,
               last_event_id: int | None = None) -> Iterator[TaskEvent]:
        """The same frames a server would send, read from the hub's subscriber."""
        opening = self.engine.open_stream(task_id, last_event_id)
        subscriber = opening.subscriber
        try:
            yield from _parse_frames(opening.frames)
            while subscriber is not None:
                if not subscriber.has_pending and not subscriber.ended:
                    subscriber.wait(1.0)
                yield from _parse_frames(subscriber.take())
                if subscriber.ended:
                    return
        finally:
            if subscriber is not None:
                self.engine.hub.unsubscribe(subscriber)


def _deliver_ctrl_c_to_this_greenlet() -> Any:
    """Ctrl-C as a KeyboardInterrupt in the calling greenlet. Python's own
    handler raises it in whichever greenlet runs, usually gevent's hub, which
    prints it to stderr before passing it on; ``run`` handles it quietly."""
    import signal

    import gevent

    caller = gevent.getcurrent()
    return gevent.signal_handler(signal.SIGINT, caller.throw, KeyboardInterrupt)


def _parse_frames(frames: bytes) -> Iterator[TaskEvent]:
    for sse in decode_stream([frames]):
        event = parse_event(sse)
        if event is not None:
            yield event


# -- doctor ------------------------------------------------------------------------------

@tasks_cli.command("doctor")
@click.argument("url")
@click.option("--token", envvar="TASKS_API_TOKEN", default=None, help=_TOKEN_HELP)
@click.option("--idle", type=float, default=20.0, show_default=True,
              help="Seconds of silence to hold a stream open, to catch idle time-outs.")
@click.option("--resumes", type=int, default=5, show_default=True,
              help="How many times to drop and resume the stream.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def doctor_command(url: str, token: str | None, idle: float, resumes: int,
                   as_json: bool) -> None:
    """Check a deployment from outside: latency, buffering, compression,
    idle time-outs and resume, with the proxy fix for each problem found."""
    from .doctor import FAIL, describe, print_report, run_checks

    try:
        findings = run_checks(url, token=token, idle=idle, resumes=resumes,
                              progress=lambda text: click.echo(text, err=True))
    except TaskstreamError as exc:
        _fail(f"cannot run the checks against {url}: {exc}")
    if as_json:
        click.echo(json.dumps({"findings": describe(findings)}, indent=2))
        sys.exit(1 if any(f.level == FAIL for f in findings) else 0)
    sys.exit(print_report(findings))
