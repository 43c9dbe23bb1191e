"""Follow-up jobs: an executor schedules more work through the manager that runs it.

An executor parameter annotated `Manager` receives a WorkerManager, the worker-side
stand-in for the manager: its schedule_job / schedule_registered_job / submit send the
request to the manager over the worker's event ring (E_SCHEDULE) and return the new
instance's uuid at once (made in the worker, so the caller can record it or look it up
later); the manager schedules it on a thread of its own (FollowUps), so a store that is
slow to take it never holds up the engine.  A request the manager refuses (unknown kind,
arguments that do not fit) is logged in the history of the instance that asked, at
ERROR, naming the uuid it was given.

Owns: the request format (both ends) and the manager-side thread.  Never does: run a
job, or decide how one is scheduled (Manager.schedule_job does).
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid as _uuid
import weakref
from collections.abc import Callable
from typing import Any

import cloudpickle

from ..ids import uuid7_int
from ..signals import start_thread

log = logging.getLogger("jobengine")


class WorkerManager:
    """The manager as an executor sees it inside a worker: it schedules follow-up jobs.
    Each method returns the new instance's uuid (str); the instance is scheduled by
    the manager a moment later, with every rule of the method of the same name."""

    __slots__ = ("_send", "uuid")

    def __init__(self, send: Callable[[bytes], None], parent_uuid: str):
        self._send = send
        self.uuid = parent_uuid  # the instance whose executor holds this handle

    def _request(self, target: tuple, options: dict[str, Any]) -> str:
        uid = uuid7_int()
        try:
            blob = cloudpickle.dumps((uid, target, options), protocol=5)
        except Exception as e:
            from ..errors import SerializationError

            raise SerializationError(
                f"a follow-up job cannot be sent to the manager: {type(e).__name__}: {e}"
            ) from None
        self._send(blob)
        return str(_uuid.UUID(int=uid))

    def schedule_job(self, job: Any, **options: Any) -> str:
        """Manager.schedule_job(job, **options), from inside a job; returns the uuid."""
        return self._request(("job", job), options)

    def schedule_registered_job(self, kind: str, **options: Any) -> str:
        """Manager.schedule_registered_job(kind, **options); returns the uuid."""
        return self._request(("kind", kind), options)

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> str:
        """Manager.submit(fn, *args, **kwargs); returns the uuid (no Future here: the
        result is in the store, Manager.lookup_instances(Query(uuid=...)))."""
        return self._request(("fn", fn), {"args": args, "kwargs": kwargs})


class FollowUps:
    """The manager's side: decode each request and schedule it, on one thread."""

    def __init__(self, schedule: Callable[[int, tuple, dict], Any], report: Callable):
        # Weak: the engine holds this, and its thread must not keep the Manager alive
        # (a collected manager stops its processes).
        self._schedule = weakref.WeakMethod(schedule)  # (uid, target, options)
        self._report = weakref.WeakMethod(report)  # (parent unit, message): a refusal
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def put(self, parent: Any, blob: bytes) -> None:
        """Engine thread: a request from the executor of `parent` (an Instance or Run)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="jobengine-follow-ups", daemon=True
                )
                start_thread(self._thread)
        self._queue.put((parent, blob))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            parent, blob = item
            uid = 0
            try:
                uid, target, options = cloudpickle.loads(blob)
                schedule = self._schedule()
                if schedule is None:
                    raise RuntimeError("the manager is gone")
                schedule(uid, target, options)
            except BaseException as e:  # never this thread: the asker's log says why
                name = str(_uuid.UUID(int=uid)) if uid else "?"
                try:
                    report = self._report()
                    if report is not None:
                        report(parent, f"follow-up job {name} was not scheduled: "
                                       f"{type(e).__name__}: {e}")  # fmt: skip
                except Exception:
                    log.exception("jobengine: a follow-up job was not scheduled")

    def close(self) -> None:
        """Let the thread end once it has scheduled what was asked before."""
        with self._lock:
            if self._thread is not None:
                self._queue.put(None)
                self._thread = None


__all__ = ["FollowUps", "WorkerManager"]
