"""Cleaner jobs (go-job's system jobs): state and log history cleared by age, on a crontab.

Manager.schedule_history_cleaner(retention, crontab=...) and schedule_log_cleaner(...)
schedule a recurring instance of the job `jobengine.history-cleaner` (or
`jobengine.log-cleaner`).  Each run computes its cutoff (now - retention) in a worker,
like any job, and the manager then deletes the records older than that from its store
(every store has clear_history / clear_logs), off the engine thread, and logs how many
went in the cleaner's own log history.  The recurrence lives in the store like any other:
scheduling the same cleaner again returns it, and it resumes on the next manager that
schedules it.

Owns: the two cleaner jobs.  Never does: decide what a store keeps otherwise (its
retention options do that).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from datetime import timedelta
from typing import Any

from .job import Job, check_seconds
from .signals import start_thread

log = logging.getLogger("jobengine")

KINDS = {"history": "jobengine.history-cleaner", "logs": "jobengine.log-cleaner"}
DEFAULT_CRONTAB = "@every 1h"


def cutoff_ns(retention_s: float) -> int:
    """The executor of a cleaner run: records older than this (Unix ns) go."""
    return time.time_ns() - int(retention_s * 1e9)


def cleaner_job(manager: Any, what: str, crontab: str, timezone: str | None) -> Job:
    """The Job that clears `what` ("history" or "logs") from `manager`'s store."""
    ref = weakref.ref(manager)  # the job lives in the registry: it must not hold the manager

    def clear(ji: Any, cutoff: int) -> None:
        def run() -> None:
            mgr = ref()
            if mgr is None:
                return
            try:
                store = mgr.store
                n = store.clear_history(cutoff) if what == "history" else store.clear_logs(cutoff)
                ji.info(f"cleared {n} {'state' if what == 'history' else 'log'} records")
            except Exception as e:  # the next run tries again
                log.warning("jobengine: the %s cleaner failed: %s", what, e)
                ji.error(f"the {what} cleaner failed: {type(e).__name__}: {e}")

        # off the engine thread: clearing a big store takes a while
        start_thread(threading.Thread(target=run, name=f"jobengine-{what}-cleaner", daemon=True))

    return Job(
        KINDS[what],
        cutoff_ns,
        description=f"clears {what} older than its retention (go-job's system job)",
        crontab=crontab,
        timezone=timezone,
        response_handler=clear,
    )


def schedule_cleaner(
    manager: Any,
    what: str,
    retention: float | timedelta,
    crontab: str = DEFAULT_CRONTAB,
    timezone: str | None = None,
) -> Any:
    """Register (once) and schedule the cleaner of `what` with this retention."""
    seconds = check_seconds(retention, f"{what} retention", allow_zero=False)
    registry = manager._registry  # noqa: SLF001 - the manager's own helper module
    job = registry.get(KINDS[what])
    if job is None or job.crontab != crontab or job.timezone != timezone:
        if job is not None:
            manager.unregister_job(job.kind)
        job = manager.register_job(cleaner_job(manager, what, crontab, timezone))
    return manager.schedule_job(job, args=(seconds,))


__all__ = ["DEFAULT_CRONTAB", "KINDS", "cleaner_job", "cutoff_ns", "schedule_cleaner"]
