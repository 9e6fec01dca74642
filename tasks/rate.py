"""Smoothed rate and ETA for progress: pure arithmetic, no IO.

The rate is an exponentially weighted moving average over time (not over
updates), so a task that reports 1,000 times a second and one that reports
once a minute both get a steady figure.
"""
from __future__ import annotations

import math

#: Seconds over which older speed counts less by a factor of e.
SMOOTHING = 3.0
#: Samples closer together than this are folded into the next one.
MIN_INTERVAL = 0.2


class RateMeter:
    def __init__(self, start: float, current: float = 0) -> None:
        self._time, self._current = start, current
        self.rate: float | None = None

    def update(self, now: float, current: float) -> float | None:
        """Feed the current count at ``now``; returns the smoothed units per second."""
        elapsed = now - self._time
        if elapsed < MIN_INTERVAL:
            return self.rate
        speed = max(0.0, (current - self._current) / elapsed)
        if self.rate is None:
            self.rate = speed
        else:
            weight = 1 - math.exp(-elapsed / SMOOTHING)
            self.rate += weight * (speed - self.rate)
        self._time, self._current = now, current
        return self.rate

    def eta(self, current: float, total: float | None) -> float | None:
        """Seconds left at the smoothed rate, or None while it is unknown."""
        if total is None or self.rate is None or self.rate <= 0:
            return None
        return max(0.0, (total - current) / self.rate)
