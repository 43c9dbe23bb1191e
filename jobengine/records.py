"""StateRecord and LogRecord: the history a store keeps of every instance.

Timestamps are kept as integer nanoseconds since the Unix epoch (cheap to make, exact to
store) and exposed as aware UTC datetimes.  Records encode to and from JSON (orjson)
for stores that keep text.

Owns: the record types and their JSON form.  Never does: I/O."""

from __future__ import annotations

import enum
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from .errors import RemoteError, StoreError
from .state import State

UTC = timezone.utc


def ns_to_datetime(ns: int | None) -> datetime | None:
    """Nanoseconds since the epoch -> aware UTC datetime (microseconds, truncated: a
    record's datetime never lies after its time, so it is a safe `after` bound)."""
    if ns is None:
        return None
    return _EPOCH + timedelta(microseconds=ns // 1000)


def datetime_to_ns(dt: datetime) -> int:
    """Aware or naive-local datetime -> nanoseconds since the epoch (exact; no float)."""
    if dt.tzinfo is None:
        dt = dt.astimezone(UTC)  # a naive datetime is local time, as timestamp() reads it
    return (dt - _EPOCH) // _MICROSECOND * 1000


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class LogLevel(enum.IntEnum):
    """Levels of an instance's log history (ordered like the logging module's)."""

    DEBUG = 10
    INFO = 20
    WARN = 30
    ERROR = 40

    def __str__(self) -> str:
        return self.name


class LogMethods:
    """debug/info/warn/error on top of a `_log(level, msg)`: the one log interface of the
    manager-side Instance and the worker-side WorkerInstance."""

    __slots__ = ()

    def _log(self, level: LogLevel, msg: Any) -> None:
        raise NotImplementedError

    def debug(self, msg: Any) -> None:
        """Append a DEBUG line to the instance's log history."""
        self._log(LogLevel.DEBUG, msg)

    def info(self, msg: Any) -> None:
        """Append an INFO line to the instance's log history."""
        self._log(LogLevel.INFO, msg)

    def warn(self, msg: Any) -> None:
        """Append a WARN line to the instance's log history."""
        self._log(LogLevel.WARN, msg)

    def error(self, msg: Any) -> None:
        """Append an ERROR line to the instance's log history."""
        self._log(LogLevel.ERROR, msg)


class _Record:
    """What every history record shares: a time, JSON round trips, equality by value.
    Subclasses define to_dict / from_dict."""

    __slots__ = ()
    time_ns: int

    @property
    def timestamp(self) -> datetime:
        """When it happened, as an aware UTC datetime."""
        return ns_to_datetime(self.time_ns)

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_json(self) -> bytes:
        """The record as JSON (orjson)."""
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes | str):
        """The record back from to_json()."""
        return cls.from_dict(orjson.loads(data))

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.to_dict() == other.to_dict()

    __hash__ = None  # mutable, compared by value


class StateRecord(_Record):
    """One transition of one instance: .state at .timestamp, during .attempt (1-based)
    on .worker (index, or None when no worker was involved), in .run (recurrences of a
    crontab instance; 1 otherwise), with an optional .cause (why it failed)."""

    __slots__ = ("attempt", "cause", "kind", "run", "state", "time_ns", "uuid", "worker")

    def __init__(
        self,
        uuid: str,
        kind: str,
        state: State,
        time_ns: int,
        attempt: int = 0,
        worker: int | None = None,
        run: int = 1,
        cause: str | None = None,
    ):
        self.uuid = uuid
        self.kind = kind
        self.state = state
        self.time_ns = time_ns
        self.attempt = attempt
        self.worker = worker
        self.run = run
        self.cause = cause

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON-ready values."""
        return {
            "uuid": self.uuid,
            "kind": self.kind,
            "state": int(self.state),
            "time_ns": self.time_ns,
            "attempt": self.attempt,
            "worker": self.worker,
            "run": self.run,
            "cause": self.cause,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StateRecord:
        return cls(
            d["uuid"],
            d["kind"],
            State(d["state"]),
            d["time_ns"],
            d.get("attempt", 0),
            d.get("worker"),
            d.get("run", 1),
            d.get("cause"),
        )

    def __repr__(self) -> str:
        return (
            f"StateRecord({self.state.name}, {self.timestamp.isoformat()}, "
            f"attempt={self.attempt}, worker={self.worker}, run={self.run}"
            + (f", cause={self.cause!r})" if self.cause else ")")
        )


class LogRecord(_Record):
    """One log line of one instance: .level, .timestamp, .message, during .attempt."""

    __slots__ = ("attempt", "kind", "level", "message", "time_ns", "uuid")

    def __init__(
        self, uuid: str, kind: str, level: LogLevel, time_ns: int, message: str, attempt: int = 0
    ):
        self.uuid = uuid
        self.kind = kind
        self.level = level
        self.time_ns = time_ns
        self.message = message
        self.attempt = attempt

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON-ready values."""
        return {
            "uuid": self.uuid,
            "kind": self.kind,
            "level": int(self.level),
            "time_ns": self.time_ns,
            "message": self.message,
            "attempt": self.attempt,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LogRecord:
        return cls(
            d["uuid"],
            d["kind"],
            LogLevel(d["level"]),
            d["time_ns"],
            d["message"],
            d.get("attempt", 0),
        )

    def __repr__(self) -> str:
        return f"LogRecord({self.level.name}, {self.timestamp.isoformat()}, {self.message!r})"


class InstanceRecord:
    """What a store keeps of an instance itself: identity, current state, timestamps
    (ns), priority and attempts, and once it has finished, its outcome: `result_payload`
    (the result under the store's payload policy, payloads.py) or `error` (a dict:
    type, message, traceback), or `note` when the result was not kept (too large, or
    a value the store's policy refuses).  result() / exception() read the outcome as a
    Future would."""

    __slots__ = (
        "attempts",
        "codec",
        "completed_ns",
        "created_ns",
        "error",
        "kind",
        "note",
        "priority",
        "processed_ns",
        "result_payload",
        "scheduled_ns",
        "state",
        "uuid",
    )

    def __init__(
        self,
        uuid: str,
        kind: str,
        state: State,
        priority: int,
        attempts: int,
        created_ns: int,
        scheduled_ns: int | None,
        processed_ns: int | None,
        completed_ns: int | None,
        result_payload: bytes | None = None,
        error: dict[str, Any] | None = None,
        note: str | None = None,
        codec: Any = None,
    ):
        self.uuid = uuid
        self.kind = kind
        self.state = state
        self.priority = priority
        self.attempts = attempts
        self.created_ns = created_ns
        self.scheduled_ns = scheduled_ns
        self.processed_ns = processed_ns
        self.completed_ns = completed_ns
        self.result_payload = result_payload
        self.error = error
        self.note = note
        self.codec = codec  # the store's PayloadCodec: what decodes result_payload

    @property
    def uuid_str(self) -> str:
        """The uuid (a string already): the same field name as Instance.uuid_str."""
        return self.uuid

    @property
    def created_at(self) -> datetime:
        """As on Instance: an aware UTC datetime (or None)."""
        return ns_to_datetime(self.created_ns)

    @property
    def scheduled_at(self) -> datetime | None:
        """As on Instance: an aware UTC datetime (or None)."""
        return ns_to_datetime(self.scheduled_ns)

    @property
    def processed_at(self) -> datetime | None:
        """As on Instance: an aware UTC datetime (or None)."""
        return ns_to_datetime(self.processed_ns)

    @property
    def completed_at(self) -> datetime | None:
        """As on Instance: an aware UTC datetime (or None)."""
        return ns_to_datetime(self.completed_ns)

    def exception(self) -> BaseException | None:
        """The recorded failure as a RemoteError (type, message, traceback), or None."""
        err = self.error
        if err is None:
            return None
        return RemoteError(
            err.get("type", "Error"), err.get("message", ""), err.get("traceback", "")
        )

    def result(self) -> Any:
        """The recorded result; raises the recorded failure (RemoteError), or
        StoreError when the store kept no result (not finished, too large, refused)."""
        exc = self.exception()
        if exc is not None:
            raise exc
        if self.result_payload is None:
            why = self.note or f"{self.uuid} has no result in the store ({self.state.name})"
            raise StoreError(why)
        if self.codec is None:
            raise StoreError(f"{self.uuid}: no payload codec to read its result with")
        return self.codec.decode(self.result_payload, f"the result of {self.uuid}")

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON-ready values (the result payload is left out)."""
        d = {k: getattr(self, k) for k in INSTANCE_FIELDS}
        d["state"] = int(self.state)
        d["error"] = self.error
        d["note"] = self.note
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InstanceRecord:
        d = dict(d)
        d["state"] = State(d["state"])
        return cls(**{k: d.get(k) for k in (*INSTANCE_FIELDS, "error", "note")})

    @classmethod
    def from_row(cls, row: tuple, codec: Any = None) -> InstanceRecord:
        """From an INSTANCE_ROW tuple whose outcome a store has turned into
        (result_payload, error, note)."""
        return cls(*row[:2], State(row[2]), *row[3:9], *row[9:12], codec)

    def __repr__(self) -> str:
        return f"InstanceRecord({self.uuid}, {self.kind!r}, {self.state.name})"


# What the engine hands to a store's write_batch (plain tuples, no objects per record):
#   INSTANCE_ROW: INSTANCE_FIELDS, then its outcome: None, ("r", the result pickled by
#     the worker), or ("e", type name, message, traceback)
#   STATE_ROW: uuid, kind, state (int), time_ns, attempt, worker, run, cause
#   LOG_ROW: uuid, kind, level (int), time_ns, message, attempt
INSTANCE_FIELDS = ("uuid", "kind", "state", "priority", "attempts", "created_ns",
                   "scheduled_ns", "processed_ns", "completed_ns")  # fmt: skip
FINAL_STATES = frozenset(int(s) for s in (State.COMPLETED, State.TERMINATED, State.CANCELED,
                                          State.TIMED_OUT))  # fmt: skip


def state_record(row: tuple) -> StateRecord:
    """A STATE_ROW as a StateRecord."""
    u, k, s, t, a, w, r, c = row
    return StateRecord(u, k, State(s), t, a, w, r, c)


def log_record(row: tuple) -> LogRecord:
    """A LOG_ROW as a LogRecord."""
    u, k, lv, t, m, a = row
    return LogRecord(u, k, LogLevel(lv), t, m, a)


class RecurrenceRecord:
    """A recurring (crontab) instance as a store keeps it, so that it outlives the
    manager running it: a manager that starts on the store later (or takes over when
    the owner's lease lapses) resumes it under the same uuid and run numbers, and the
    job's misfire policy decides what happens to the ticks missed meanwhile.

    key identifies the schedule (its kind and arguments; the crontab and zone are the
    registered job's, so editing them in code moves the recurrence, not doubles it):
    scheduling the same one again returns the live instance, not a second recurrence.
    payload is the pickled (args, kwargs) the worker receives; run and fire_ns are the
    next run's number and its tick (ns, before jitter); owner and lease_until_ns say
    which manager runs it and until when its claim holds without renewal."""

    __slots__ = (
        "created_ns",
        "fire_ns",
        "key",
        "kind",
        "lease_until_ns",
        "owner",
        "payload",
        "priority",
        "run",
        "uuid",
    )

    def __init__(
        self,
        uuid: str,
        kind: str,
        key: str,
        payload: bytes,
        priority: int,
        run: int,
        fire_ns: int,
        created_ns: int,
        owner: str | None = None,
        lease_until_ns: int = 0,
    ):
        self.uuid = uuid
        self.kind = kind
        self.key = key
        self.payload = bytes(payload)
        self.priority = priority
        self.run = run
        self.fire_ns = fire_ns
        self.created_ns = created_ns
        self.owner = owner or None
        self.lease_until_ns = lease_until_ns

    FIELDS = ("uuid", "kind", "key", "payload", "priority", "run", "fire_ns", "created_ns",
              "owner", "lease_until_ns")  # fmt: skip

    def as_tuple(self) -> tuple:
        """The fields in FIELDS order (the column order of the SQL stores)."""
        return tuple(getattr(self, f) for f in self.FIELDS)

    @property
    def fire_at(self) -> datetime:
        """The next run's tick, an aware UTC datetime."""
        return ns_to_datetime(self.fire_ns)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RecurrenceRecord) and self.as_tuple() == other.as_tuple()

    def __repr__(self) -> str:
        return (
            f"RecurrenceRecord({self.uuid}, {self.kind!r}, run {self.run} at "
            f"{self.fire_at.isoformat()}, owner {self.owner!r})"
        )


class QueueEntry:
    """A one-off instance waiting in (or claimed from) a store's shared queue.

    uuid, kind, priority, due_ns (Unix ns) and seq (the store's enqueue order) place it:
    claims take the highest priority first, then the earliest due, then the first
    enqueued.  payload holds its [args, kwargs] under the store's payload policy;
    target ("module:qualname") or executor (a payload: the callable, with a callable
    backoff) tell a manager without a job of this kind how to run it; options are the
    job's (max_retries, timeout and backoff in seconds; "fn" for a callable backoff);
    attempts counts attempts started before it was enqueued (0).  origin is the
    manager that enqueued it (told when it finishes); owner and lease_until_ns say
    which manager has claimed it, until when; reaped says a claim once took it from a
    manager whose lease had lapsed (that one may have started it); canceled says a
    cancel was asked while it was claimed."""

    __slots__ = (
        "attempts",
        "canceled",
        "created_ns",
        "due_ns",
        "executor",
        "kind",
        "lease_until_ns",
        "options",
        "origin",
        "owner",
        "payload",
        "priority",
        "reaped",
        "seq",
        "target",
        "uuid",
    )

    FIELDS = ("uuid", "kind", "priority", "due_ns", "seq", "payload", "target", "executor",
              "options", "attempts", "created_ns", "origin", "owner", "lease_until_ns",
              "reaped", "canceled")  # fmt: skip

    def __init__(
        self,
        uuid: str,
        kind: str,
        priority: int,
        due_ns: int,
        seq: int = 0,
        payload: bytes = b"",
        target: str | None = None,
        executor: bytes | None = None,
        options: dict[str, Any] | None = None,
        attempts: int = 0,
        created_ns: int = 0,
        origin: str | None = None,
        owner: str | None = None,
        lease_until_ns: int = 0,
        reaped: bool = False,
        canceled: bool = False,
    ):
        self.uuid = uuid
        self.kind = kind
        self.priority = int(priority)
        self.due_ns = int(due_ns)
        self.seq = int(seq or 0)
        self.payload = bytes(payload or b"")
        self.target = target or None
        self.executor = bytes(executor) if executor else None
        self.options = options or {}
        self.attempts = int(attempts or 0)
        self.created_ns = int(created_ns or 0)
        self.origin = origin or None
        self.owner = owner or None
        self.lease_until_ns = int(lease_until_ns or 0)
        self.reaped = bool(int(reaped or 0))
        self.canceled = bool(int(canceled or 0))

    def as_tuple(self) -> tuple:
        return tuple(getattr(self, f) for f in self.FIELDS)

    def __repr__(self) -> str:
        return (
            f"QueueEntry({self.uuid}, {self.kind!r}, priority {self.priority}, "
            f"owner {self.owner!r})"
        )
