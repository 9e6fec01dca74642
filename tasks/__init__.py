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
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .context import TaskContext
    from .engine import TaskEngine
    from .records import Status
    from .registry import MaxLength, Range, Registry, task
    from .runner import TaskCancelled, TaskInterrupted

# Loaded on first use, so `import tasks.client` (no gevent, no Flask needed
# in a script) does not pull in the engine.
_WHERE = {"task": "registry", "Range": "registry", "MaxLength": "registry",
          "Registry": "registry", "TaskContext": "context", "TaskEngine": "engine",
          "TaskCancelled": "runner", "TaskInterrupted": "runner", "Status": "records"}

__all__ = ["task", "Range", "MaxLength", "Registry", "TaskContext", "TaskEngine",
           "TaskCancelled", "TaskInterrupted", "Status"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'tasks' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
