"""The job registry: which Job runs under which kind, and how its executor travels.

Owns: kind -> Job, the small integer id each Job gets (a task record carries that id,
not the executor), and each Job's executor blob (cloudpickled once, shipped once per
worker).  Reads are lock-free (the dispatcher looks up a kind id per job); changes
take one lock.  Never does: scheduling, dispatch, I/O."""

from __future__ import annotations

import itertools
import sys
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from .errors import (
    DuplicateJobError,
    InvalidArgumentTypeError,
    SerializationError,
    UnknownJobError,
)
from .job import Job
from .pool.channel import executor_blob


def _stamp(job: Job) -> None:
    """Job.registered_at: when a manager first registered it (go-job's RegisteredAt)."""
    if job.registered_at is None:
        job.registered_at = datetime.now(timezone.utc)


class JobRegistry:
    """Jobs by kind.  `real_time_timeouts` is False under a virtual clock: the engine
    then enforces timeouts itself, so the executor blob carries none for the worker."""

    def __init__(self, real_time_timeouts: bool = True):
        self._lock = threading.Lock()
        # (_core.ShortPath reads _jobs, _ids, _blobs and _implicit directly: change
        # them in place, never rebind them)
        self._jobs: dict[str, Job] = {}
        self._ids: dict[Job, int] = {}
        self._seq = itertools.count(1)
        self._blobs: dict[Job, bytes] = {}
        self._implicit: dict[Any, Job] = {}  # submit(): callable -> its implicit Job
        self._refs: dict[Job, int] = {}  # transient job -> its unsettled instances
        self._keys: dict[Job, Any] = {}  # transient job -> its key in _implicit
        self._cron_variants: set[str] = set()  # kinds scheduled with their own crontab
        self._real_time_timeouts = real_time_timeouts

    # -- registration ------------------------------------------------------------------
    def register(self, job: Job) -> Job:
        """Register `job` under its kind (DuplicateJobError if the kind is taken)."""
        if not isinstance(job, Job):
            raise InvalidArgumentTypeError(f"register_job needs a Job, got {job!r}")
        with self._lock:
            if job.kind in self._jobs:
                raise DuplicateJobError(f"a job of kind {job.kind!r} is already registered")
            self._ids.setdefault(job, next(self._seq))
            self._jobs[job.kind] = job
            _stamp(job)
        return job

    def adopt(self, job: Job) -> None:
        """Register a job met for the first time in schedule_job.  A per-schedule
        variant registers its base and runs as itself; so does a Job whose kind another
        Job holds (go-job's rule: schedule_job runs the job it is given)."""
        if self._jobs.get(job.kind) is job:
            return
        if job.base is not None:
            self.adopt(job.base)
        with self._lock:
            known = self._jobs.get(job.kind)
            if known is None and job.base is None:
                self._ids.setdefault(job, next(self._seq))
                self._jobs[job.kind] = job
                _stamp(job)
            elif known is not job:
                self._ids.setdefault(job, next(self._seq))
            if job.base is not None and job.crontab is not None:
                self._cron_variants.add(job.kind)

    def foreign(self, job: Job) -> None:
        """Give a job made from a shared-queue entry an id for the workers, without
        taking its kind's name (a job registered here later under it is another)."""
        with self._lock:
            self._ids.setdefault(job, next(self._seq))

    def unregister(self, kind: str) -> Job:
        """Remove the job of `kind` (UnknownJobError if none)."""
        with self._lock:
            try:
                return self._jobs.pop(kind)
            except KeyError:
                raise UnknownJobError(f"no job of kind {kind!r} is registered") from None

    def implicit(self, fn: Callable, named: bool | None = None) -> Job:
        """The Job submit() runs `fn` as, registered under fn's qualified name (made
        unique with #2, #3, ... if that kind is taken).

        A callable reachable by its import path (a module's function or class, a
        builtin; `named`, by default decided here) keeps its Job for the manager's
        life: its executor travels to each worker once.  Any other (a lambda, a
        partial, a bound method, a callable object) gets a transient Job, counted per
        call: settled() drops it when its last instance settles, so the manager does
        not keep the callable (or what it holds) alive."""
        try:
            job = self._implicit.get(fn)
        except TypeError:  # an unhashable callable: never shared between calls
            with self._lock:
                job = self._new_implicit(fn, None, transient=True)
                self._refs[job] = 1
            return job
        if job is not None and not job.transient:
            return job  # (the common case first: importable() costs ~1 us a call)
        if named is None:
            named = importable(fn)
        with self._lock:
            job = self._implicit.get(fn)
            if job is None:
                job = self._new_implicit(fn, fn, transient=not named)
            if job.transient:
                self._refs[job] = self._refs.get(job, 0) + 1
        return job

    def _new_implicit(self, fn: Callable, key: Any, transient: bool) -> Job:
        """A new implicit Job for fn, cached under key unless it is None (lock held)."""
        kind = getattr(fn, "__qualname__", None) or getattr(type(fn), "__qualname__", "callable")
        base, n = kind, 1
        while kind in self._jobs:
            n += 1
            kind = f"{base}#{n}"
        job = Job(kind, fn)
        job.transient = transient
        self._ids[job] = next(self._seq)
        self._jobs[kind] = job
        _stamp(job)
        if key is not None:
            self._implicit[key] = job
            self._keys[job] = key
        return job

    def hold(self, job: Job, n: int = 1) -> None:
        """`n` more unsettled instances of `job` (a no-op unless it is transient)."""
        if job.transient and n:
            with self._lock:
                self._refs[job] = self._refs.get(job, 0) + n

    def settled(self, job: Job, n: int = 1) -> int | None:
        """`n` instances of transient `job` settled.  When they were the last, forget
        the job and let go of its executor; return its kind id (for the workers to
        drop), else None."""
        if not job.transient:
            return None
        with self._lock:
            n = self._refs.get(job, 0) - n
            if n > 0:
                self._refs[job] = n
                return None
            self._refs.pop(job, None)
            if self._jobs.get(job.kind) is job:
                del self._jobs[job.kind]
            key = self._keys.pop(job, None)
            if key is not None and self._implicit.get(key) is job:
                del self._implicit[key]
            self._blobs.pop(job, None)
            kind_id = self._ids.pop(job, None)
        job.executor = None  # the callable, and whatever it holds, can go now
        return kind_id

    # -- lookups -----------------------------------------------------------------------
    def lookup(self, kind: str) -> Job:
        """The registered job of `kind` (UnknownJobError if none)."""
        try:
            return self._jobs[kind]
        except KeyError:
            raise UnknownJobError(f"no job of kind {kind!r} is registered") from None

    def get(self, kind: str) -> Job | None:
        """The registered job of `kind`, or None."""
        return self._jobs.get(kind)

    def jobs(self) -> list[Job]:
        """Registered jobs, in registration order."""
        with self._lock:
            return list(self._jobs.values())

    def note_cron_variant(self, kind: str) -> None:
        """`kind` has recurrences with a crontab of their own (Ticks.learn_variants)."""
        with self._lock:
            self._cron_variants.add(kind)

    def crontab_kinds(self) -> list[str]:
        """Kinds of the registered recurring (crontab) jobs, and of those scheduled here
        with a per-schedule crontab."""
        with self._lock:
            kinds = {k for k, j in self._jobs.items() if j.crontab is not None}
            return sorted(kinds | self._cron_variants)

    # -- how an executor travels -------------------------------------------------------
    def kind_id(self, job: Job) -> int:
        """The small id task records carry instead of the executor."""
        return self._ids[job]

    def kind_ids(self) -> dict[Job, int]:
        """Every job's kind id (the live mapping: read it, do not change it)."""
        return self._ids

    def executor_blob(self, job: Job) -> bytes:
        """The executor as a worker receives it (once), with what the worker needs to
        call it; SerializationError if it cannot be pickled (made once per Job)."""
        blob = self._blobs.get(job)
        if blob is None:
            # Under a virtual clock the engine enforces timeouts in virtual time; the
            # supervisor's real-time deadline would fire at the wrong moment.
            timeout = job.timeout if self._real_time_timeouts else None
            inject = job.injections or None
            try:
                blob = executor_blob(job.kind, job.executor, inject, timeout)
            except Exception as e:
                raise SerializationError(
                    f"the executor of job {job.kind!r} cannot be pickled: {type(e).__name__}: {e}"
                ) from None
            self._blobs[job] = blob
        return blob


def importable(fn: Any) -> bool:
    """Whether `fn` is what its module exposes under its qualified name (a module's
    function or class, a builtin): then it lives as long as its module anyway."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname:
        return False
    obj: Any = sys.modules.get(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return obj is fn


__all__ = ["JobRegistry", "importable"]
