"""Taskstream: background tasks with live progress, for Flask.

Define a task with ``@task``; it receives a ``TaskContext`` to report progress
and logs through, and runs as a gevent greenlet under ``TaskEngine``::

    from typing import Annotated
    from tasks import task, Range, TaskContext

    @task
    def countdown(ctx: TaskContext, *, start: Annotated[int, Range(1, 100)] = 10) -> str:
        \"\"\"Counts down to zero, one step a second.\"\"\"
        for n in ctx.iter(range(start, 0, -1)):
            ctx.sleep(1)
        return "lift-off"
"""
from .context import TaskContext
from .engine import TaskEngine
from .records import Status
from .registry import MaxLength, Range, Registry, task
from .runner import TaskCancelled, TaskInterrupted

__all__ = ["task", "Range", "MaxLength", "Registry", "TaskContext", "TaskEngine",
           "TaskCancelled", "TaskInterrupted", "Status"]
