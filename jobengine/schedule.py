"""Fire times: crontab (croniter) in a time zone, with a daylight-saving policy.

croniter walks the crontab in *local wall-clock time* (naive datetimes, so it never sees
an offset change); each wall time is then placed on the timeline with zoneinfo:

- a wall time that does not exist (spring forward, 02:30 in a 02:00->03:00 gap) fires
  once, moved forward by the length of the gap (03:30) -- `nonexistent="shift"`, the
  default -- or not at all (`"skip"`);
- a wall time that occurs twice (fall back) fires once at its first occurrence --
  `ambiguous="first"`, the default -- or at the second (`"second"`), or at both
  (`"both"`).

A shifted time can land on or before the next regular tick (a "*/15" crontab shifted
by an hour): the walk drops fire times that do not move forward, so each instant fires
at most once and fire times strictly increase.

Owns: crontab walks and time zone resolution.  Never does: touch an instance or the
engine.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from croniter.croniter import CroniterError

from .errors import InvalidArgumentError, InvalidArgumentTypeError

log = logging.getLogger("jobengine")

UTC = timezone.utc
NONEXISTENT = ("shift", "skip")
AMBIGUOUS = ("first", "second", "both")


LOCALTIME_PATH = "/etc/localtime"
TIMEZONE_PATH = "/etc/timezone"
_local_zones: dict[str | None, tzinfo] = {}  # by the TZ it was found for


def local_zone() -> tzinfo:
    """The machine's local time zone as an IANA zone, so daylight saving moves local
    fire times: from TZ (a name, or a path to a zone file), else /etc/localtime (the
    zone its link names, or the file itself), else /etc/timezone.  If none of them
    gives a zone, UTC (logged once)."""
    tz_env = os.environ.get("TZ")
    zone = _local_zones.get(tz_env)
    if zone is None:
        zone = _local_zones[tz_env] = _find_local_zone(tz_env)
    return zone


def _zone_file(path: str, key: str) -> tzinfo | None:
    try:
        with open(path, "rb") as f:
            return ZoneInfo.from_file(f, key=key)
    except (OSError, ValueError):
        return None


def _find_local_zone(tz_env: str | None) -> tzinfo:
    if tz_env:
        name = tz_env[1:] if tz_env.startswith(":") else tz_env
        if name.startswith("/"):
            zone = _zone_file(name, name)
            if zone is not None:
                return zone
        else:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                pass
    try:
        target = os.path.realpath(LOCALTIME_PATH)
        if "zoneinfo/" in target:
            return ZoneInfo(target.split("zoneinfo/", 1)[1])
    except (OSError, ZoneInfoNotFoundError, ValueError):
        pass
    try:
        with open(TIMEZONE_PATH, encoding="utf-8") as f:
            return ZoneInfo(f.read().strip())
    except (OSError, ZoneInfoNotFoundError, ValueError):
        pass
    zone = _zone_file(LOCALTIME_PATH, "localtime")
    if zone is not None:
        return zone
    log.warning(
        "jobengine: cannot find this machine's time zone (TZ=%r, %s, %s); crontabs "
        "without timezone= run in UTC",
        tz_env,
        LOCALTIME_PATH,
        TIMEZONE_PATH,
    )
    return UTC


def resolve_timezone(name: str | None):
    """IANA name -> ZoneInfo (None: the local zone).  InvalidArgumentError if unknown."""
    if name is None:
        return local_zone()
    if not isinstance(name, str):
        raise InvalidArgumentTypeError(f"timezone must be an IANA name (str), got {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise InvalidArgumentError(f"unknown time zone {name!r}: {e}") from None


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def every_interval(expr: str) -> timedelta | None:
    """The interval of an `@every <duration>` descriptor (go-job's and Go cron's:
    `@every 90s`, `@every 1h30m`, `@every 500ms`), None for any other crontab, or
    InvalidArgumentError for a malformed or non-positive duration."""
    text = expr.strip()
    if not text.startswith("@every"):
        return None
    spec = text[len("@every") :].strip()
    pos, seconds = 0, 0.0
    for m in _DURATION.finditer(spec):
        if m.start() != pos:
            break
        seconds += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not spec or pos != len(spec) or seconds <= 0:
        raise InvalidArgumentError(
            f"invalid crontab {expr!r}: @every needs a positive duration such as 90s, "
            "1m30s, 2h or 500ms"
        )
    return timedelta(seconds=seconds)


def check_crontab(expr: str) -> str:
    """A crontab croniter accepts (5 fields, an optional 6th for seconds, descriptors
    such as @hourly), or `@every <duration>`, that fires at least once from now on, or
    InvalidArgumentError naming it (`0 0 31 2 *`, February 31st, never fires)."""
    if not isinstance(expr, str):
        raise InvalidArgumentTypeError(f"crontab must be a str, got {expr!r}")
    if every_interval(expr) is not None:
        return expr
    try:
        it = croniter(expr, datetime.now())
    except (CroniterError, ValueError, KeyError) as e:
        raise InvalidArgumentError(f"invalid crontab {expr!r}: {e}") from None
    try:
        it.get_next(datetime)
    except (CroniterError, ValueError, OverflowError) as e:
        raise InvalidArgumentError(f"crontab {expr!r} never fires ({e})") from None
    return expr


def _place(wall: datetime, tz, nonexistent: str, ambiguous: str) -> list[datetime]:
    """The instants (aware, UTC) at which naive local `wall` fires under the policy."""
    first = wall.replace(tzinfo=tz, fold=0)
    second = wall.replace(tzinfo=tz, fold=1)
    u1, u2 = first.astimezone(UTC), second.astimezone(UTC)
    if u1.astimezone(tz).replace(tzinfo=None) != wall:
        # Not on the local clock (a gap).  fold=0 reads the wall time with the offset in
        # force before the gap, which is the same wall time moved forward by the gap.
        return [] if nonexistent == "skip" else [u1]
    if u1 != u2:  # occurs twice: u1 is the earlier instant
        if ambiguous == "both":
            return [min(u1, u2), max(u1, u2)]
        return [min(u1, u2)] if ambiguous == "first" else [max(u1, u2)]
    return [u1]


LOOKBACK = timedelta(hours=3)


def _offset_changes_near(instant: datetime, tz) -> bool:
    """Whether `tz` changes its UTC offset within LOOKBACK of `instant` (aware, UTC)."""
    offset = instant.astimezone(tz).utcoffset()
    return any((instant + d).astimezone(tz).utcoffset() != offset for d in (-LOOKBACK, LOOKBACK))


def fire_times(
    crontab: str,
    timezone: str | None = None,
    start: datetime | None = None,
    *,
    nonexistent: str = "shift",
    ambiguous: str = "first",
) -> Iterator[datetime]:
    """Fire times strictly after `start` (aware, or naive in `timezone`; default now), as
    aware datetimes in `timezone`, in increasing order, forever."""
    check_crontab(crontab)
    if nonexistent not in NONEXISTENT:
        raise InvalidArgumentError(f"nonexistent must be one of {NONEXISTENT}, got {nonexistent!r}")
    if ambiguous not in AMBIGUOUS:
        raise InvalidArgumentError(f"ambiguous must be one of {AMBIGUOUS}, got {ambiguous!r}")
    tz = resolve_timezone(timezone) if (timezone is None or isinstance(timezone, str)) else timezone
    if start is None:
        start = datetime.now(UTC)
    elif not isinstance(start, datetime):
        raise InvalidArgumentTypeError(f"start must be a datetime, got {start!r}")
    if start.tzinfo is None:
        start = start.replace(tzinfo=tz)
    start_utc = start.astimezone(UTC)
    step = every_interval(crontab)
    if step is not None:
        yield from _every(step, start_utc, tz)
        return
    # Walk wall-clock times from `start`, keep instants strictly after it, increasing.
    # Near an offset change a shifted or doubled wall time earlier than start's may
    # still fire after it: then walk from a little before (LOOKBACK covers every gap
    # and fold there is).  Elsewhere start right at it: a per-second crontab would
    # otherwise take 10,800 croniter steps (~0.5 s) to reach its first tick.
    wall0 = start.astimezone(tz).replace(tzinfo=None)
    if _offset_changes_near(start_utc, tz):
        wall0 -= LOOKBACK
    it = croniter(crontab, wall0)
    last = start_utc
    while True:
        wall = it.get_next(datetime)
        for instant in _place(wall, tz, nonexistent, ambiguous):
            if instant > last:
                last = instant
                yield instant.astimezone(tz)


def _every(step: timedelta, start: datetime, tz) -> Iterator[datetime]:
    """@every: a grid of `step` aligned to the Unix epoch, strictly after `start`.  An
    absolute grid (not one from the moment of scheduling) is what lets every manager on
    a store agree on the ticks, and a resumed recurrence keep its beat; daylight saving
    does not move it."""
    us = step // timedelta(microseconds=1)
    k = (start - _EPOCH) // timedelta(microseconds=1) // us + 1
    while True:
        yield (_EPOCH + timedelta(microseconds=k * us)).astimezone(tz)
        k += 1


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def preview(
    crontab: str,
    timezone: str | None = None,
    start: datetime | None = None,
    count: int = 20,
    *,
    nonexistent: str = "shift",
    ambiguous: str = "first",
) -> list[datetime]:
    """The next `count` fire times of `crontab` after `start` (default: now), as aware
    datetimes in `timezone` (default: local)."""
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise InvalidArgumentError(f"count must be an int >= 0, got {count!r}")
    times = fire_times(crontab, timezone, start, nonexistent=nonexistent, ambiguous=ambiguous)
    return list(itertools.islice(times, count))
