"""The job registry: which Job runs under which kind, and how its executor travels.

Owns: kind -> Job, the small integer id each Job gets (a task record carries that id,
not the executor), and each Job's executor blob (cloudpickled once, shipped once per
worker).  Reads are lock-free (the dispatcher looks up a kind id per job); changes
take one lock.  Never does: scheduling, dispatch, I/O."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

import cloudpickle

from .errors import DuplicateJobError, InvalidArgumentTypeError, UnknownJobError
from .job import Job


class JobRegistry:
    """Jobs by kind.  `real_time_timeouts` is False under a virtual clock: the engine
    then enforces timeouts itself, so the executor blob carries none for the worker."""

    def __init__(self, real_time_timeouts: bool = True):
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._ids: dict[Job, int] = {}
        self._seq = itertools.count(1)
        self._blobs: dict[Job, bytes] = {}
        self._implicit: dict[Any, Job] = {}  # submit(): callable -> its implicit Job
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
        return job

    def adopt(self, job: Job) -> None:
        """Register a job met for the first time in schedule_job; a different Job
        already registered under its kind is an error."""
        if self._jobs.get(job.kind) is job:
            return
        with self._lock:
            known = self._jobs.get(job.kind)
            if known is None:
                self._ids.setdefault(job, next(self._seq))
                self._jobs[job.kind] = job
            elif known is not job:
                raise DuplicateJobError(
                    f"another job of kind {job.kind!r} is registered; schedule that one"
                )

    def unregister(self, kind: str) -> Job:
        """Remove the job of `kind` (UnknownJobError if none)."""
        with self._lock:
            try:
                return self._jobs.pop(kind)
            except KeyError:
                raise UnknownJobError(f"no job of kind {kind!r} is registered") from None

    def implicit(self, fn: Callable) -> Job:
        """The Job submit() runs `fn` as: registered on first use under fn's qualified
        name (made unique with #2, #3, ... if that kind is taken)."""
        job = self._implicit.get(fn)
        if job is not None:
            return job
        kind = getattr(fn, "__qualname__", None) or getattr(type(fn), "__qualname__", "callable")
        with self._lock:
            job = self._implicit.get(fn)
            if job is not None:
                return job
            base, n = kind, 1
            while kind in self._jobs:
                n += 1
                kind = f"{base}#{n}"
            job = Job(kind, fn)
            self._ids.setdefault(job, next(self._seq))
            self._jobs[kind] = job
            self._implicit[fn] = job
        return job

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

    def crontab_kinds(self) -> list[str]:
        """Kinds of the registered recurring (crontab) jobs."""
        with self._lock:
            return [k for k, j in self._jobs.items() if j.crontab is not None]

    # -- how an executor travels -------------------------------------------------------
    def kind_id(self, job: Job) -> int:
        """The small id task records carry instead of the executor."""
        return self._ids[job]

    def executor_blob(self, job: Job) -> bytes:
        """The executor as a worker receives it (once): cloudpickled with what the
        worker needs to call it."""
        blob = self._blobs.get(job)
        if blob is None:
            # Under a virtual clock the engine enforces timeouts in virtual time; the
            # supervisor's real-time deadline would fire at the wrong moment.
            timeout = job.timeout if self._real_time_timeouts else None
            blob = self._blobs[job] = cloudpickle.dumps(
                (job.executor, job.instance_param, job.kind, timeout)
            )
        return blob


__all__ = ["JobRegistry"]
