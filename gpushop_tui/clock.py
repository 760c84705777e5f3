"""The one source of time for everything above the base layer.

Nothing in `core` reads the wall clock or sleeps directly: it asks a `Clock`. Production uses
`SystemClock`; lifecycle tests use `FakeClock`, whose time moves only when a test advances it,
so expiry, hard-max, idle and stuck rules run in milliseconds without real sleeps.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """What the core needs of time: the current UTC instant, a monotonic reading, and a sleep."""

    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (for durations and rate limits)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Suspend the caller for `seconds` of this clock's time."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """A clock that stands still until `advance()` is called.

    Sleepers wake, in deadline order, when the clock is advanced past their deadline. `advance`
    yields to the event loop after each wake-up so that woken tasks run before time moves on.
    """

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2026, 1, 1, tzinfo=UTC)
        if start.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware start time")
        self._now = start.astimezone(UTC)
        self._mono = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._mono + seconds, next(self._seq), future))
        await future

    @property
    def sleeping(self) -> int:
        """How many callers are waiting in `sleep` (lets tests wait until a loop is parked)."""
        return sum(1 for _, _, f in self._sleepers if not f.done())

    async def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, waking every sleeper whose deadline is passed."""
        if seconds < 0:
            raise ValueError("time cannot go backwards")
        target = self._mono + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, future = heapq.heappop(self._sleepers)
            self._set(deadline)
            if not future.done():
                future.set_result(None)
            for _ in range(5):
                await asyncio.sleep(0)
        self._set(target)
        await asyncio.sleep(0)

    def _set(self, mono: float) -> None:
        self._now += timedelta(seconds=mono - self._mono)
        self._mono = mono


def utc(dt: datetime) -> datetime:
    """`dt` in UTC; refuses naive datetimes, which are the usual source of off-by-hours bugs."""
    if dt.tzinfo is None:
        raise ValueError(f"naive datetime {dt.isoformat()} has no timezone")
    return dt.astimezone(UTC)
