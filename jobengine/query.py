"""Query: which instances (or records) a lookup or a cancel touches.

Owns: the Query type and its checks.  Never does: read a store."""

from __future__ import annotations

import re
import uuid as _uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from .errors import InvalidArgumentError, InvalidArgumentTypeError
from .records import LogLevel, datetime_to_ns
from .state import State

if TYPE_CHECKING:
    from .records import LogRecord, StateRecord


@dataclass(frozen=True)
class Query:
    """Filters, all optional and combined with AND.

    uuid: one instance.  kind: its job's kind.  state: the instance's CURRENT state; a
    group such as State.FINAL matches any of its members.  after / before: creation time
    window (after <= created < before); in a history or log lookup, the record's own
    time.  limit: at most this many results, oldest first.  level (log lookups only):
    log records at this LogLevel or more severe, as the logging module's levels.
    An empty Query() matches everything."""

    uuid: str | _uuid.UUID | None = None
    kind: str | None = None
    state: State | None = None
    after: datetime | None = None
    before: datetime | None = None
    limit: int | None = None
    level: LogLevel | None = None

    def __post_init__(self):
        if self.uuid is not None:
            if isinstance(self.uuid, _uuid.UUID):
                object.__setattr__(self, "uuid", str(self.uuid))
            elif not isinstance(self.uuid, str):
                raise InvalidArgumentTypeError(
                    f"Query.uuid must be a str or UUID, got {self.uuid!r}"
                )
        if self.state is not None and not isinstance(self.state, State):
            raise InvalidArgumentTypeError(f"Query.state must be a State, got {self.state!r}")
        for name in ("after", "before"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, datetime):
                raise InvalidArgumentTypeError(f"Query.{name} must be a datetime, got {v!r}")
        if self.level is not None and not isinstance(self.level, LogLevel):
            try:  # a name ("WARN") or a number (30), as logging accepts
                level = LogLevel[self.level.upper()] if isinstance(self.level, str) else None
                level = level or LogLevel(self.level)
            except (KeyError, ValueError, TypeError):
                raise InvalidArgumentError(
                    f"Query.level must be a LogLevel ({', '.join(LogLevel.__members__)}), "
                    f"got {self.level!r}"
                ) from None
            object.__setattr__(self, "level", level)
        if self.limit is not None and (
            not isinstance(self.limit, int) or isinstance(self.limit, bool) or self.limit < 0
        ):
            raise InvalidArgumentError(f"Query.limit must be an int >= 0, got {self.limit!r}")

    @property
    def after_ns(self) -> int | None:
        """`after` in Unix nanoseconds (None when open)."""
        return None if self.after is None else datetime_to_ns(self.after)

    @property
    def before_ns(self) -> int | None:
        """`before` in Unix nanoseconds (None when open)."""
        return None if self.before is None else datetime_to_ns(self.before)

    def matches_record(self, record: StateRecord | LogRecord) -> bool:
        """Whether a history or log record falls in the time window (and, for a log
        record, is at `level` or above)."""
        a, b, t = self.after_ns, self.before_ns, record.time_ns
        if (a is not None and t < a) or (b is not None and t >= b):
            return False
        level = self.level
        return level is None or getattr(record, "level", level) >= level

    def matches(self, uuid: str, kind: str, state: State, created_ns: int) -> bool:
        """Whether an instance with these fields passes every filter (limit aside)."""
        if self.uuid is not None and uuid != self.uuid:
            return False
        if self.kind is not None and kind != self.kind:
            return False
        if self.state is not None and not (state & self.state):
            return False
        a, b = self.after_ns, self.before_ns
        if a is not None and created_ns < a:
            return False
        return not (b is not None and created_ns >= b)


_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str) -> datetime:
    """A time given as text, for `after=`: a duration back from now (90s, 10m, 2h, 7d)
    or an ISO 8601 time (naive: local); InvalidArgumentError otherwise."""
    m = _RELATIVE.match(text.strip())
    if m:
        return datetime.now(timezone.utc) - timedelta(seconds=float(m[1]) * _UNIT[m[2]])
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidArgumentError(
            f"{text!r} is neither a duration (90s, 10m, 2h, 7d) nor an ISO 8601 time"
        ) from None
    return value if value.tzinfo else value.astimezone()
