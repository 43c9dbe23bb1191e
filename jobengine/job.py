"""Job: the definition of a kind of work (go-job's NewJob with its options).

Owns: a Job's options and their checks, and the executor's signature.  Never does:
schedule (the manager does)."""

from __future__ import annotations

import inspect
import math
import random
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from . import _core
from .convert import Conversions
from .errors import (
    ArgumentBindingError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidJobError,
)
from .payloads import dumps_value

PRIORITY_MIN = _core.PRIORITY_MIN
PRIORITY_MAX = _core.PRIORITY_MAX
# The longest delay, timeout, backoff or grace accepted (100 years): every due time
# then fits the core's signed 64-bit nanoseconds, and the workers' deadlines too.
MAX_SECONDS = 100 * 365.25 * 86400


RETRY_FOREVER = -1  # max_retries: retry until an attempt succeeds or it is canceled


def check_priority(priority: Any, what: str = "priority") -> int:
    """An int within [PRIORITY_MIN, PRIORITY_MAX], or a named error."""
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise InvalidArgumentTypeError(f"{what} must be an int, got {priority!r}")
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise InvalidArgumentError(f"{what} {priority} is outside [{PRIORITY_MIN}, {PRIORITY_MAX}]")
    return priority


def check_seconds(value: Any, what: str, *, allow_zero: bool = True) -> float | None:
    """None, or a finite non-negative number of seconds (int, float or timedelta), at
    most MAX_SECONDS (100 years)."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise InvalidArgumentTypeError(f"{what} must be seconds or a timedelta, got {value!r}")
    if math.isnan(value) or math.isinf(value):
        raise InvalidArgumentError(f"{what} must be finite, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise InvalidArgumentError(f"{what} must be {'>=' if allow_zero else '>'} 0, got {value!r}")
    if value > MAX_SECONDS:
        raise InvalidArgumentError(
            f"{what} must be at most {MAX_SECONDS:.0f} s (100 years), got {value!r}"
        )
    return float(value)


def check_schedule_at(value: Any, now_ns: int | None = None) -> datetime | None:
    """None, or a datetime (aware, or naive local time) at most MAX_SECONDS after now
    (a time in the past means: due at once)."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidArgumentTypeError(f"schedule_at must be a datetime, got {value!r}")
    try:
        at_s = value.timestamp()
    except (OverflowError, ValueError, OSError) as e:
        raise InvalidArgumentError(f"schedule_at {value!r} is out of range: {e}") from None
    now_s = time.time() if now_ns is None else now_ns / 1e9
    if at_s - now_s > MAX_SECONDS:
        raise InvalidArgumentError(
            f"schedule_at {value.isoformat()} is more than 100 years away (at most "
            f"{MAX_SECONDS:.0f} s after now)"
        )
    return value


# What an executor parameter's annotation asks the worker to pass in (by name, so a
# string annotation works too and job.py needs no import of the manager).
_INJECTED = {
    "Instance": "instance",
    "jobengine.Instance": "instance",
    "WorkerInstance": "instance",
    "Manager": "manager",
    "jobengine.Manager": "manager",
    "WorkerInfo": "worker",
    "jobengine.WorkerInfo": "worker",
}


def injected_parameters(executor: Callable) -> list[tuple[str, str]]:
    """(name, what) of each executor parameter the worker fills: "instance" (annotated
    Instance, or else one named `ji`), "manager" (annotated Manager: a handle that
    schedules follow-up jobs) or "worker" (annotated WorkerInfo)."""
    try:
        params = inspect.signature(executor).parameters
    except (TypeError, ValueError):
        return []
    out = []
    for p in params.values():
        ann = p.annotation
        name = ann if isinstance(ann, str) else getattr(ann, "__name__", None)
        what = _INJECTED.get(name) if isinstance(name, str) else None
        if what is not None and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            out.append((p.name, what))
    if "ji" in params and not any(w == "instance" for _, w in out):
        out.append(("ji", "instance"))
    return out


def instance_parameter(executor: Callable) -> str | None:
    """The name of the executor's parameter that receives the worker-side Instance: one
    annotated `Instance` (or its string form) or, failing that, one named `ji`."""
    for name, what in injected_parameters(executor):
        if what == "instance":
            return name
    return None


PLACEHOLDER = "?"
_UNPLANNED = False  # Job._plan before the first converting bind (False: it pickles as itself)

#: Job options that schedule_job / schedule_registered_job may set for one schedule.
OVERRIDABLE = (
    "crontab",
    "timezone",
    "jitter",
    "max_retries",
    "timeout",
    "backoff",
    "response_handler",
    "error_handler",
    "state_change_handler",
)
# Every option of Job's constructor (what derive() copies).
_OPTIONS = (
    "description",
    "priority",
    "schedule_at",
    "schedule_after",
    "misfire",
    "misfire_grace",
    "nonexistent",
    "ambiguous",
    "max_overlap",
    *OVERRIDABLE,
)


def task_payload(job: Job, args: tuple, kwargs: dict, uuid: str) -> tuple:
    """What a worker unpickles for one instance: (args, kwargs), plus the uuid when the
    executor is handed its Instance -- by a parameter (instance_parameter) or by go-job's
    "?" placeholder among the arguments, which the worker replaces with it."""
    if job.injections or _has_placeholder(args, kwargs):
        return args, kwargs, uuid
    return args, kwargs


# What a worker receives for a call without arguments (most scheduled jobs: go-job's
# schedule_registered_job("name")): pickled once, not once per instance (~0.5 us).
NO_ARGUMENTS = dumps_value(((), {}))


def task_bytes(job: Job, args: tuple, kwargs: dict | None, uuid: str) -> bytes:
    """task_payload, pickled as dumps_value pickles it (what Instance.payload holds)."""
    if not args and not kwargs and not job.injections:
        return NO_ARGUMENTS
    return dumps_value(task_payload(job, args, kwargs or {}, uuid))


def _is_placeholder(value: Any) -> bool:
    # `type(...) is str` first: `x == "?"` on an arbitrary object may not return a bool
    return type(value) is str and value == PLACEHOLDER


def _has_placeholder(args: tuple, kwargs: dict) -> bool:
    # a plain loop: this runs on every schedule, and most have one or two arguments
    for a in args:
        if type(a) is str and a == PLACEHOLDER:
            return True
    if kwargs:
        return any(map(_is_placeholder, kwargs.values()))
    return False


def _positional_arity(sig: inspect.Signature) -> tuple[int, float] | None:
    """(min, max) positional arguments that bind when no keyword is given, or None when
    a keyword-only parameter is required (then only a full bind can tell)."""
    lo, hi = 0, 0
    for p in sig.parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            hi += 1
            if p.default is p.empty:
                lo = hi
        elif p.kind is p.VAR_POSITIONAL:
            hi = math.inf
        elif p.kind is p.KEYWORD_ONLY and p.default is p.empty:
            return None
    return lo, hi


class Job:
    """A kind of work: an executor plus its defaults.

    Job(kind, executor, *, description, priority, schedule_at, schedule_after, crontab,
    timezone, jitter, misfire, misfire_grace, nonexistent, ambiguous, max_overlap,
    max_retries, backoff, timeout, response_handler, error_handler,
    state_change_handler).  See DESIGN.md §1; every option is checked here and a bad one
    raises InvalidJobError / InvalidArgumentError / InvalidArgumentTypeError naming it.

    Recurring jobs (crontab=...; README "Scheduling"): timezone is an IANA name (default
    local); nonexistent="shift"|"skip" and ambiguous="first"|"second"|"both" say how a
    local time skipped or repeated by daylight saving fires; jitter (seconds, or a
    callable returning them) is drawn once per fire; misfire="coalesce"|"skip" says what
    a tick later than misfire_grace seconds does (run once now, or wait for the next);
    max_overlap is how many runs of one recurring instance may run at once.
    max_retries=RETRY_FOREVER (-1) retries until an attempt succeeds or the instance is
    canceled; timeout=0 (as None) means no timeout, as in go-job."""

    __slots__ = (
        "_arity",
        "_derived",
        "_plan",
        "_signature",
        "ambiguous",
        "backoff",
        "base",
        "crontab",
        "description",
        "error_handler",
        "executor",
        "injections",
        "instance_param",
        "instance_pos",
        "jitter",
        "kind",
        "max_overlap",
        "max_retries",
        "misfire",
        "misfire_grace",
        "nonexistent",
        "priority",
        "registered_at",
        "response_handler",
        "schedule_after",
        "schedule_at",
        "state_change_handler",
        "timeout",
        "timezone",
        "transient",
        "tz",
    )

    def __init__(
        self,
        kind: str,
        executor: Callable[..., Any],
        *,
        description: str = "",
        priority: int = 0,
        schedule_at: datetime | None = None,
        schedule_after: float | timedelta | None = None,
        crontab: str | None = None,
        timezone: str | None = None,
        jitter: float | Callable[[], float] | None = None,
        misfire: str = "coalesce",
        misfire_grace: float | timedelta = 1.0,
        nonexistent: str = "shift",
        ambiguous: str = "first",
        max_overlap: int = 1,
        max_retries: int = 0,
        backoff: float | Callable[[int], float] | None = None,
        timeout: float | timedelta | None = None,
        response_handler: Callable[[Any, Any], None] | None = None,
        error_handler: Callable[[Any, BaseException], Any] | None = None,
        state_change_handler: Callable[[Any, Any], None] | None = None,
    ):
        if not isinstance(kind, str) or not kind.strip():
            raise InvalidJobError(f"Job kind must be a non-empty str, got {kind!r}")
        if not callable(executor):
            raise InvalidJobError(f"Job {kind!r}: executor must be callable, got {executor!r}")
        for name, h in (
            ("response_handler", response_handler),
            ("error_handler", error_handler),
            ("state_change_handler", state_change_handler),
        ):
            if h is not None and not callable(h):
                raise InvalidJobError(f"Job {kind!r}: {name} must be callable, got {h!r}")
        from .schedule import AMBIGUOUS, NONEXISTENT, check_crontab, resolve_timezone

        if crontab is not None:
            try:
                check_crontab(crontab)
            except (InvalidArgumentError, InvalidArgumentTypeError) as e:
                raise InvalidJobError(f"Job {kind!r}: {e}") from None
        if timezone is not None and crontab is None:
            raise InvalidJobError(f"Job {kind!r}: timezone {timezone!r} needs a crontab")
        try:
            self.tz = resolve_timezone(timezone)
        except (InvalidArgumentError, InvalidArgumentTypeError) as e:
            raise InvalidJobError(f"Job {kind!r}: {e}") from None
        if jitter is not None and not callable(jitter):
            check_seconds(jitter, f"Job {kind!r}: jitter")
        if misfire not in ("coalesce", "skip"):
            raise InvalidArgumentError(
                f"Job {kind!r}: misfire must be 'coalesce' or 'skip', got {misfire!r}"
            )
        if nonexistent not in NONEXISTENT:
            raise InvalidArgumentError(
                f"Job {kind!r}: nonexistent must be one of {NONEXISTENT}, got {nonexistent!r}"
            )
        if ambiguous not in AMBIGUOUS:
            raise InvalidArgumentError(
                f"Job {kind!r}: ambiguous must be one of {AMBIGUOUS}, got {ambiguous!r}"
            )
        if not isinstance(max_overlap, int) or isinstance(max_overlap, bool):
            raise InvalidArgumentTypeError(
                f"Job {kind!r}: max_overlap must be an int, got {max_overlap!r}"
            )
        if max_overlap < 1:
            raise InvalidArgumentError(f"Job {kind!r}: max_overlap must be >= 1, got {max_overlap}")
        if not isinstance(max_retries, int) or isinstance(max_retries, bool):
            raise InvalidArgumentTypeError(
                f"Job {kind!r}: max_retries must be an int, got {max_retries!r}"
            )
        if max_retries < RETRY_FOREVER:
            raise InvalidArgumentError(
                f"Job {kind!r}: max_retries must be >= 0, or -1 (RETRY_FOREVER), got {max_retries}"
            )
        if backoff is not None and not callable(backoff):
            check_seconds(backoff, f"Job {kind!r}: backoff")
        self.kind = kind
        self.executor = executor
        self.description = description
        self.priority = check_priority(priority, f"Job {kind!r}: priority")
        self.schedule_at = check_schedule_at(schedule_at)
        self.schedule_after = check_seconds(schedule_after, f"Job {kind!r}: schedule_after")
        self.crontab = crontab
        self.timezone = timezone
        self.jitter = jitter
        self.misfire = misfire
        self.misfire_grace = check_seconds(misfire_grace, f"Job {kind!r}: misfire_grace")
        self.nonexistent = nonexistent
        self.ambiguous = ambiguous
        self.max_overlap = max_overlap
        self.max_retries = max_retries
        self.backoff = backoff
        # go-job's rule: a zero timeout is no timeout
        self.timeout = check_seconds(timeout, f"Job {kind!r}: timeout") or None
        self.response_handler = response_handler
        self.error_handler = error_handler
        self.state_change_handler = state_change_handler
        injected = injected_parameters(executor)
        self.instance_param = next((n for n, w in injected if w == "instance"), None)
        self.registered_at: datetime | None = None  # set by the first manager it joins
        self.base: Job | None = None  # the Job a per-schedule variant was derived from
        self._derived: dict[tuple, Job] | None = None
        self._plan: Conversions | object | None = _UNPLANNED
        # Where the worker puts the Instance: at this index among the positional
        # arguments (it may stand anywhere), or by keyword (None).
        self.instance_pos: int | None = None
        # (name, position or None, "instance" | "manager" | "worker") of each parameter
        # the worker fills, in signature order (what the executor blob carries)
        self.injections: tuple[tuple[str, int | None, str], ...] = ()
        # Made by submit() for a callable with no import path (a lambda, a partial, a
        # bound method): the registry drops it, and it lets go of the callable, when
        # its last instance settles.
        self.transient = False
        try:
            sig = inspect.signature(executor)
            if injected:
                params = list(sig.parameters.values())
                what = dict(injected)
                for i, p in enumerate(params):
                    if p.name in what:
                        positional = p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                        pos = i if positional else None
                        self.injections += ((p.name, pos, what[p.name]),)
                        if p.name == self.instance_param:
                            self.instance_pos = pos
                params = [p for p in params if p.name not in what]
                sig = sig.replace(parameters=params)
            self._signature: inspect.Signature | None = sig
            self._arity = _positional_arity(sig)
        except (TypeError, ValueError):  # some builtins have no signature: bind at run time
            self._signature = None
            self._arity = None

    def bind(self, args: tuple, kwargs: dict, convert: bool = False) -> tuple[tuple, dict]:
        """Check that args/kwargs fit the executor's signature (ArgumentBindingError);
        with `convert`, also convert them by its annotations (convert.py).  Returns
        the arguments to use."""
        if self._signature is None:
            return args, kwargs
        conversions = self._conversions if convert else None
        arity = self._arity
        if arity is not None and not kwargs and arity[0] <= len(args) <= arity[1]:
            if conversions is None:
                return args, kwargs  # the common case, decided without Signature.bind
            return conversions.apply(self.kind, args, kwargs)
        name, pos = self.instance_param, self.instance_pos
        filled = None  # a "?" in the instance parameter's own place fills it
        if name is not None:
            if _is_placeholder(kwargs.get(name)):
                kwargs = {k: v for k, v in kwargs.items() if k != name}
                filled = name
            elif pos is not None and len(args) > pos and _is_placeholder(args[pos]):
                args = args[:pos] + args[pos + 1 :]
                filled = pos
        try:
            self._signature.bind(*args, **kwargs)
        except TypeError as e:
            raise ArgumentBindingError(
                f"arguments {args!r} {kwargs!r} do not fit job {self.kind!r} "
                f"executor{self._signature}: {e}"
            ) from None
        if conversions is not None:
            args, kwargs = conversions.apply(self.kind, args, kwargs)
        if isinstance(filled, str):
            kwargs = {**kwargs, filled: PLACEHOLDER}
        elif isinstance(filled, int):
            args = (*args[:filled], PLACEHOLDER, *args[filled:])
        return args, kwargs

    @property
    def _conversions(self) -> Conversions | None:
        """The executor's conversion plan (made on first use: type hints cost ~50 us)."""
        plan = self._plan
        if plan is _UNPLANNED:
            plan = self._plan = Conversions.of(self.executor, self._signature)
        return plan  # type: ignore[return-value]

    def jitter_seconds(self) -> float:
        """One draw of the jitter added to a fire (0 without jitter)."""
        j = self.jitter
        if j is None:
            return 0.0
        if callable(j):
            return check_seconds(j(), f"Job {self.kind!r}: jitter()") or 0.0
        return random.uniform(0.0, float(j))

    def backoff_seconds(self, attempt: int) -> float:
        """Delay before retry number `attempt` (1 = the first retry)."""
        if self.backoff is None:
            return 0.0
        if callable(self.backoff):
            return (
                check_seconds(self.backoff(attempt), f"Job {self.kind!r}: backoff({attempt})")
                or 0.0
            )
        return float(self.backoff)

    def stored_overrides(self) -> dict[str, Any]:
        """What a store keeps of a variant's options so that another manager resumes
        its recurrence as scheduled: the plain values (a callable jitter or backoff
        and the handlers apply where it was scheduled)."""
        base = self.base
        if base is None:
            return {}
        out = {}
        for name in OVERRIDABLE:
            value = getattr(self, name)
            if value != getattr(base, name) and not callable(value):
                out[name] = value
        return out

    def derive(self, **overrides: Any) -> Job:
        """This job with some options replaced, for one schedule: schedule_job(job,
        crontab=..., timeout=...) runs its instance as job.derive(...).  The variant
        keeps the kind, the executor and `base` (the job it came from); options given
        as None keep the job's.  Variants are cached by their options, so a loop that
        schedules with the same overrides makes one (the executor travels once)."""
        overrides = {k: v for k, v in overrides.items() if v is not None}
        unknown = set(overrides) - set(OVERRIDABLE)
        if unknown:  # (as Python does for an unexpected keyword: a TypeError)
            raise InvalidArgumentTypeError(
                f"Job {self.kind!r}: {', '.join(sorted(unknown))} cannot be set per schedule "
                f"(these can: {', '.join(OVERRIDABLE)})"
            )
        if not overrides:
            return self
        key = tuple(sorted(overrides.items()))
        try:
            hash(key)
        except TypeError:  # an unhashable option value: a variant of its own
            key = None
        cache = self._derived
        if key is not None and cache is not None and key in cache:
            return cache[key]
        options = {name: getattr(self, name) for name in _OPTIONS}
        options.update(overrides)
        try:
            variant = Job(self.kind, self.executor, **options)
        except InvalidJobError as e:  # a schedule option: bad input to schedule_job
            raise InvalidArgumentError(str(e)) from None
        variant.base = self.base or self
        variant.transient = self.transient
        if key is not None:
            if cache is None:
                cache = self._derived = {}
            cache[key] = variant
        return variant

    def __repr__(self) -> str:
        name = getattr(self.executor, "__qualname__", self.executor)
        return f"Job(kind={self.kind!r}, executor={name!r})"
