"""Time as a seam: the one ``Clock`` every component reads, the real one and a fixed one.

A clock answers two questions: what time it is (``now``: timezone-aware UTC, for snapshots,
ledger entries and lease expiry) and how much time has passed (``monotonic``: seconds that
never go back, for deadlines and latencies). Tests pass a ``FixedClock`` (or their own
clock) so that snapshots and ledgers are reproducible.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Gives the current time (timezone-aware, UTC) and a monotonic reading in seconds."""

    def now(self) -> datetime:
        """The current time."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin that never decrease (for durations only)."""
        ...


class SystemClock:
    """The wall clock and the system's monotonic clock."""

    def now(self) -> datetime:
        """The current UTC time."""
        return datetime.now(UTC)

    def monotonic(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()


class FixedClock:
    """A clock that starts at a fixed instant and advances by a step at each reading.

    Both readings share one instant: ``monotonic`` is the seconds from the start to it, so a
    deadline measured with this clock passes after a known number of readings.
    """

    def __init__(
        self,
        start: datetime | None = None,
        step: timedelta = timedelta(seconds=1),
    ) -> None:
        self._start = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._t = self._start
        self._step = step

    def now(self) -> datetime:
        """The next instant."""
        t = self._t
        self._t = t + self._step
        return t

    def monotonic(self) -> float:
        """Seconds from the start to the next instant."""
        return (self.now() - self._start).total_seconds()
