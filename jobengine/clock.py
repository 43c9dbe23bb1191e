"""Clocks: where the manager reads time.

The manager reads wall time (records, schedule_at, crontab ticks) and monotonic time
(the scheduler core's due times, backoff, timeouts) through one Clock.  SystemClock is
the default.  VirtualClock is for tests: time moves only when the test calls advance(),
so a week of crontab ticks, a DST transition or a backoff runs in milliseconds, with
exact fire times to assert on.

Owns: the Clock interface and its two implementations.  Never does: sleep (the engine
waits on its doorbell)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone

from .errors import InvalidArgumentError, InvalidArgumentTypeError
from .records import datetime_to_ns


class Clock:
    """The interface: time_ns() (Unix ns) and monotonic_ns().  `virtual` tells the
    manager whether time can jump (then it also stamps worker events itself)."""

    virtual = False

    def time_ns(self) -> int:
        raise NotImplementedError

    def monotonic_ns(self) -> int:
        raise NotImplementedError

    def subscribe(self, wake: Callable[[], None]) -> None:
        """Call `wake` whenever time jumps (virtual clocks only)."""

    def unsubscribe(self, wake: Callable[[], None]) -> None:
        """Stop calling `wake`."""


class SystemClock(Clock):
    """The machine's clocks."""

    time_ns = staticmethod(time.time_ns)
    monotonic_ns = staticmethod(time.monotonic_ns)


class VirtualClock(Clock):
    """A clock that moves only when told: VirtualClock(start=datetime), advance(seconds),
    set(datetime).  Managers using it wake up at every move."""

    virtual = True

    def __init__(self, start: datetime | None = None):
        if start is None:
            start = datetime.now(timezone.utc)
        if not isinstance(start, datetime):
            raise InvalidArgumentTypeError(f"start must be a datetime, got {start!r}")
        self._lock = threading.Lock()
        self._wall = datetime_to_ns(start)
        self._mono = 1_000_000_000_000  # arbitrary, positive, like CLOCK_MONOTONIC
        self._listeners: list[Callable[[], None]] = []

    def time_ns(self) -> int:
        return self._wall

    def monotonic_ns(self) -> int:
        return self._mono

    def now(self, tz=timezone.utc) -> datetime:
        return datetime.fromtimestamp(self._wall / 1e9, tz)

    def advance(self, seconds: float) -> None:
        """Move time forward by `seconds` (>= 0)."""
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
            raise InvalidArgumentTypeError(f"advance needs seconds, got {seconds!r}")
        if seconds < 0 or seconds != seconds:
            raise InvalidArgumentError(f"a clock only moves forward; got {seconds!r}")
        step = round(seconds * 1e9)
        with self._lock:
            self._wall += step
            self._mono += step
            listeners = list(self._listeners)
        for wake in listeners:
            wake()

    def set(self, when: datetime) -> None:
        """Move time forward to `when`."""
        ns = datetime_to_ns(when)
        if ns < self._wall:
            raise InvalidArgumentError(f"a clock only moves forward; {when} is in its past")
        self.advance((ns - self._wall) / 1e9)

    def subscribe(self, wake: Callable[[], None]) -> None:
        with self._lock:
            self._listeners.append(wake)

    def unsubscribe(self, wake: Callable[[], None]) -> None:
        with self._lock:
            if wake in self._listeners:
                self._listeners.remove(wake)


SYSTEM = SystemClock()
