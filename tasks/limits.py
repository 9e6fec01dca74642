"""Overload limits: open streams per worker and per client address, and a
token bucket per client address on task creation.

Counts are per worker and per app (``app.extensions["tasks_limits"]``): a
stream takes a place when its view opens it and gives it back in the body's
``close()``, which gunicorn and werkzeug always call. The client address is
``request.remote_addr``: behind a proxy, every client has the proxy's address
unless werkzeug's ``ProxyFix`` (or gunicorn's ``forwarded_allow_ips``) puts
the real one there.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Mapping

from flask import Flask

from .errors import RateLimited, TooManyClientStreams, TooManyStreams
from .events import Subscriber

#: Client addresses whose buckets are kept before full (idle) ones are dropped.
_MAX_BUCKETS = 10_000


class StreamLimits:
    """Open streams per worker and per client, and their subscribers (for the
    merged-progress figure in /metrics)."""

    def __init__(self, *, max_streams: int, per_client: int) -> None:
        self.max_streams, self.per_client = max_streams, per_client
        self.open = 0
        self.opened_total = 0
        self.refused_total = 0
        self._by_client: dict[str, int] = {}
        self._subscribers: set[Subscriber] = set()
        self.merged_closed = 0   # progress events merged by streams already closed

    def acquire(self, client: str) -> Callable[[Subscriber | None], None]:
        """Take a place for one stream, or raise; returns its release, which
        is safe to call more than once."""
        if self.max_streams and self.open >= self.max_streams:
            self.refused_total += 1
            raise TooManyStreams(
                f"this worker has {self.open} open streams (TASKS_MAX_STREAMS="
                f"{self.max_streams}); retry shortly", headers={"Retry-After": "5"})
        held = self._by_client.get(client, 0)
        if self.per_client and held >= self.per_client:
            self.refused_total += 1
            raise TooManyClientStreams(
                f"{held} streams are open from your address (TASKS_MAX_STREAMS_PER_CLIENT="
                f"{self.per_client}); close one, or share one /api/events stream",
                headers={"Retry-After": "5"})
        self.open += 1
        self.opened_total += 1
        self._by_client[client] = held + 1
        released = False

        def release(subscriber: Subscriber | None) -> None:
            nonlocal released
            if released:
                return
            released = True
            self.open -= 1
            left = self._by_client.get(client, 1) - 1
            if left > 0:
                self._by_client[client] = left
            else:
                self._by_client.pop(client, None)
            if subscriber is not None and subscriber in self._subscribers:
                self._subscribers.discard(subscriber)
                self.merged_closed += subscriber.merged

        return release

    def follow(self, subscriber: Subscriber | None) -> None:
        """Remember a stream's subscriber until its release (for ``merged``)."""
        if subscriber is not None:
            self._subscribers.add(subscriber)

    def merged(self) -> int:
        """Progress events merged for slow readers, closed streams and open ones."""
        return self.merged_closed + sum(s.merged for s in list(self._subscribers))

    def client_count(self, client: str) -> int:
        return self._by_client.get(client, 0)


class CreateRate:
    """A token bucket per client address: ``rate`` tokens a second, up to ``burst``."""

    def __init__(self, *, rate: float, burst: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self._clock = rate, burst, clock
        self._buckets: dict[str, tuple[float, float]] = {}   # client -> (tokens, at)
        self.refused_total = 0

    def take(self, client: str) -> None:
        """Spend one token of ``client``'s bucket, or raise ``RateLimited``."""
        if not self.rate:
            return
        now = self._clock()
        tokens, at = self._buckets.get(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens < 1:
            self.refused_total += 1
            wait = max(1, math.ceil((1 - tokens) / self.rate))
            raise RateLimited(
                f"too many tasks started from your address (TASKS_CREATE_RATE={self.rate:g}/s, "
                f"TASKS_CREATE_BURST={self.burst}); retry in {wait} s",
                headers={"Retry-After": str(wait)})
        self._buckets[client] = (tokens - 1, now)
        if len(self._buckets) > _MAX_BUCKETS:
            self._forget_full(now)

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled (they hold nothing a new one would
        not); with too many still busy, the least recent half goes too, so
        memory stays bounded however many addresses a client uses."""
        full_after = self.burst / self.rate
        for client, (_, at) in list(self._buckets.items()):
            if now - at >= full_after:
                del self._buckets[client]
        if len(self._buckets) > _MAX_BUCKETS // 2:
            newest = sorted(self._buckets.items(), key=lambda item: item[1][1])
            self._buckets = dict(newest[len(newest) // 2:])


class Limits:
    """The app's limits, in ``app.extensions["tasks_limits"]``."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.streams = StreamLimits(max_streams=settings["TASKS_MAX_STREAMS"],
                                    per_client=settings["TASKS_MAX_STREAMS_PER_CLIENT"])
        self.create = CreateRate(rate=settings["TASKS_CREATE_RATE"],
                                 burst=settings["TASKS_CREATE_BURST"])


def init_app(app: Flask) -> Limits:
    if "tasks_limits" in app.extensions:
        raise RuntimeError("the limits are already set up on this app; call "
                           "limits.init_app(app) once per app.")
    limits = Limits(app.config)
    app.extensions["tasks_limits"] = limits
    return limits
