"""Task types for the tests, registered in the default registry as ``t_*``.

``t_gate`` waits on a named gate the test opens, so a test decides exactly
when a task moves on instead of sleeping.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

import gevent.event

from tasks import TaskCancelled, TaskContext, task

GATES: defaultdict[str, gevent.event.Event] = defaultdict(gevent.event.Event)


@task
def t_gate(ctx: TaskContext, *, gate: str, steps: int = 1) -> dict[str, Any]:
    """Waits for the test to open ``gate`` before each step."""
    ctx.total = steps
    for i in range(1, steps + 1):
        GATES[f"{gate}:{i}"].wait()
        ctx.update(i, message=f"step {i}")
    return {"gate": gate}


@task
def t_raise(ctx: TaskContext, *, message: str = "boom") -> None:
    """Raises at once."""
    raise ValueError(message)


@task
def t_bad_result(ctx: TaskContext) -> Any:
    """Returns something JSON cannot hold."""
    return {"when": object()}


@task
def t_burst(ctx: TaskContext, *, logs: int = 10, progress: int = 10,
            text: str = "line") -> int:
    """Emits many events without yielding in between."""
    ctx.total = progress
    for i in range(logs):
        ctx.log(f"{text} {i}")
    for i in range(1, progress + 1):
        ctx.update(i)
    return logs


@task
def t_cleanup(ctx: TaskContext, *, gate: str) -> None:
    """Catches its cancellation to log a clean-up line, then re-raises."""
    try:
        GATES[gate].wait()
    except TaskCancelled:
        ctx.log("cleaning up")
        raise


@task
def t_threaded(ctx: TaskContext, *, seconds: float = 0.2) -> str:
    """Blocks a real thread (not the event loop) through run_blocking."""
    import time
    return ctx.run_blocking(lambda: (time.sleep(seconds), "slept")[1])
