"""The event-loop watchdog: names any greenlet that holds the loop too long.

gevent's monitor thread (a real OS thread) wakes every ``TASKS_BLOCK_REPORT``
seconds and checks whether the loop switched greenlets since its last look;
a greenlet that ran a whole period without switching is reported. So a block
is reported once it lasts between one and two periods, while it still
blocks, even if it never ends; a long one again at 2, 4, 8... periods. The engine names each task's greenlet
``task=<id> name=<type>`` (engine._name_greenlet), so the line names the
task. Blocking code stalls every stream of the worker (PITFALLS 2, 14): the
fix is ``ctx.run_blocking`` or ``gevent.sleep(0)``, not a longer timeout.

The report is one line written straight to the worker's stderr (the server
log) from the monitor thread: no lock a blocked loop could hold, no gevent
call from a foreign thread. gevent's own report (every greenlet's stack) is
turned off: with thousands of streams it would be thousands of lines.
Started once per worker process (``gunicorn.conf.py``'s ``post_worker_init``,
``python server.py``), never at import or per app.
"""
from __future__ import annotations

import os
import sys
import time
import warnings
from typing import Any

import gevent
from gevent import events as gevent_events

_started = False


class _Streak:
    """One greenlet reported period after period is one long block: report it
    at 1, 2, 4, 8... periods, not once a period."""

    def __init__(self) -> None:
        self.greenlet_id = 0
        self.last_at = 0.0
        self.blocked_for = 0.0
        self.next_report = 0.0

    def should_report(self, greenlet: Any, period: float) -> bool:
        now = time.monotonic()
        if id(greenlet) == self.greenlet_id and now - self.last_at <= 2.5 * period:
            self.blocked_for += period
        else:
            self.greenlet_id, self.blocked_for, self.next_report = id(greenlet), period, period
        self.last_at = now
        if self.blocked_for + 1e-9 < self.next_report:
            return False
        self.next_report *= 2
        return True


_streak = _Streak()


def start(seconds: float) -> bool:
    """Start watching this process's event loop; False when off (``seconds`` 0)
    or already started."""
    global _started
    if not seconds or _started:
        return False
    gevent.config.max_blocking_time = seconds
    gevent.config.print_blocking_reports = False
    gevent.config.monitor_thread = True
    gevent_events.subscribers.append(_on_event)
    with warnings.catch_warnings():
        # gevent would also watch memory, which needs psutil; we only watch for blocking.
        warnings.filterwarnings("ignore", message="Unable to monitor memory usage")
        gevent.get_hub().start_periodic_monitoring_thread()
    _started = True
    return True


def _on_event(event: Any) -> None:
    """Runs in the monitor thread: format and write, nothing else."""
    if not isinstance(event, gevent_events.EventLoopBlocked):
        return
    if not _streak.should_report(event.greenlet, event.blocking_time):
        return
    os.write(sys.stderr.fileno(), (describe(event.greenlet, _streak.blocked_for,
                                            _blocked_at(event.info)) + "\n").encode())


def describe(greenlet: Any, seconds: float, where: str) -> str:
    """The warning line: time, pid, who blocked, and where it was."""
    name = str(getattr(greenlet, "name", "") or "")
    who = name if name.startswith("task=") else f"greenlet={greenlet!r}"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %z")
    return (f"[{stamp}] [{os.getpid()}] [WARNING] event loop blocked for at least "
            f"{seconds:.2g} s by {who}{' at ' + where if where else ''}; every stream of this "
            "worker stalls meanwhile: move the work to ctx.run_blocking or yield with "
            "gevent.sleep(0)")


def _blocked_at(info: Any) -> str:
    """The innermost frame of the blocked stack in gevent's report, as file:line in func."""
    for entry in info or ():
        if not isinstance(entry, str) or 'File "' not in entry:
            continue
        frames = [line.strip() for line in entry.splitlines() if line.strip().startswith("File")]
        if frames:
            # File "x.py", line 12, in func
            return frames[-1].replace("File ", "", 1).replace('"', "")
    return ""

