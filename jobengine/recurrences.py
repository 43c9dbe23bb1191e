"""A manager's recurring instances as the store keeps them, so they outlive it.

The engine runs a recurrence (manager.py: its tick in the core, a Run per fire); this
module keeps it in the store and decides who runs it:

- schedule: the recurrence goes into the store under its schedule key (kind and
  arguments: the crontab is the registered job's, so an edited crontab moves the
  recurrence rather than doubling it); the same schedule there already is returned
  instead, live if this manager runs it, else as a stand-in Instance that becomes live
  if this manager ever takes it over;
- own: the manager that runs a recurrence owns it through a lease (real time, whatever
  the manager's clock), renewed every lease / 3 from the engine thread; each armed tick
  is saved (run number, tick) with the next batch of records;
- claim: at start(), when a crontab job is registered, and every renewal, a manager
  takes the store's recurrences of its crontab jobs that nobody owns (their manager
  stopped: released) or whose lease lapsed (it died), and resumes them: same uuid, run
  numbers carry on, missed ticks through the misfire policy;
- claim_tick: each tick is claimed in the store before it runs, so it runs once even if
  two managers believe they own the recurrence (one paused past its lease);
- release: stop() hands them back; cancel forgets them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import socket
import threading
import time
import uuid as _uuid
import weakref
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from .errors import ManagerStateError, StoreError
from .ids import uuid7_int
from .instance import Instance
from .records import LogLevel, RecurrenceRecord, datetime_to_ns
from .schedule import fire_times
from .state import State

if TYPE_CHECKING:
    from .job import Job
    from .manager import Manager

log = logging.getLogger("jobengine")

_PROCESSING = State.PROCESSING
_SCHEDULED = State.SCHEDULED
_TERMINATED = State.TERMINATED


def settle_suspended(inst: Instance) -> None:
    """The manager stopped: a recurrence's Future that no run resolved gets an error."""
    if not inst.done():
        inst.set_exception(
            ManagerStateError(
                f"the manager stopped before a run of {inst.kind!r} finished; the recurrence "
                "is suspended in the store and resumes when a manager starts on it"
            )
        )


class Recurrences:
    def __init__(self, manager: Manager, lease: float):
        self.m = manager
        self.lease_ns = int(lease * 1e9)
        self.node = f"{socket.gethostname()}:{os.getpid()}:{uuid7_int() & 0xFFFFFFFF:08x}"
        self.live: dict[str, Instance] = {}  # uuid -> a recurrence this manager runs
        self.standby: dict[str, Instance] = {}  # uuid -> one another manager runs
        self._claim_lock = threading.Lock()  # one claim at a time: each resumes once
        self.next_renew = 0.0  # time.monotonic() of the next renewal

    def _lease_until(self) -> int:
        return time.time_ns() + self.lease_ns

    # -- a new schedule ------------------------------------------------------------------
    def add(
        self, inst: Instance, key_material: bytes, first: datetime
    ) -> tuple[RecurrenceRecord, Instance | None]:
        """Put a newly scheduled recurrence into the store.  Returns its record and,
        when the store has the same schedule already, the instance to return instead."""
        job = inst.job
        key = hashlib.blake2b(key_material, digest_size=16).hexdigest()
        rec = RecurrenceRecord(inst.uuid_str, job.kind, key, inst._payload, inst.priority, 1,
                               datetime_to_ns(first), inst._created_ns, self.node,
                               self._lease_until())  # fmt: skip
        stored = self.m.store.add_recurrence(rec)
        if stored.uuid == rec.uuid:
            return rec, None
        return rec, self._existing(stored, job)

    def own(self, inst: Instance, rec: RecurrenceRecord) -> None:
        """inst, armed, is this manager's to run."""
        inst._rec = rec
        self.live[inst.uuid_str] = inst

    def _existing(self, stored: RecurrenceRecord, job: Job) -> Instance:
        live = self.live.get(stored.uuid)
        if live is None and (stored.owner is None or stored.lease_until_ns < time.time_ns()):
            self.claim([job.kind])  # nobody runs it: from now on, this manager does
            live = self.live.get(stored.uuid)
        if live is not None:
            return live
        standby = self.standby.get(stored.uuid)
        if standby is None:
            standby = self.standby[stored.uuid] = self._instance(stored, job)
            self.m._known[stored.uuid] = weakref.ref(standby)
        return standby

    def is_standby(self, inst: Instance) -> bool:
        return self.standby.get(inst.uuid_str) is inst

    def _instance(self, rec: RecurrenceRecord, job: Job, inst: Instance | None = None) -> Instance:
        """An Instance for a stored recurrence (or `inst`, a stand-in, brought up to date)."""
        if inst is None:
            args, kwargs = pickle.loads(rec.payload)[:2]
            inst = Instance(self.m, job, _uuid.UUID(rec.uuid).int, args, kwargs, rec.priority,
                            rec.created_ns)  # fmt: skip
        inst._payload = rec.payload
        inst._make_recurring()
        inst.run = rec.run
        inst.state = _SCHEDULED
        inst._scheduled_ns = rec.fire_ns
        return inst

    # -- while it runs -------------------------------------------------------------------
    def save(self, inst: Instance, fire_ns: int) -> None:
        """inst armed its next run (inst.run at fire_ns): the store learns it with the
        next batch of records."""
        rec = inst._rec
        rec.run, rec.fire_ns, rec.lease_until_ns = inst.run, fire_ns, self._lease_until()
        self.m._recorder.store_op(self.m.store.save_recurrence, RecurrenceRecord(*rec.as_tuple()))

    def claim_tick(self, rec: RecurrenceRecord, fire: datetime) -> bool:
        """Whether this manager may run the tick at `fire` (nobody else ran it)."""
        try:
            return self.m.store.claim_tick(rec.key, datetime_to_ns(fire))
        except StoreError:
            # At least once: with the store unreachable, run the tick rather than lose it.
            log.warning("jobengine: cannot claim a tick; running it", exc_info=True)
            return True

    def forget(self, inst: Instance) -> None:
        """inst was canceled: it leaves the store too (with the next batch)."""
        self.live.pop(inst.uuid_str, None)
        if inst._rec is not None:
            self.m._recorder.store_op(self.m.store.delete_recurrence, inst.uuid_str)
            inst._rec = None

    # -- who runs what -------------------------------------------------------------------
    def claim(self, kinds: list[str] | None = None) -> int:
        """Take over the store's recurrences of `kinds` (default: every crontab job
        registered with the manager) that no manager owns or whose owner's lease lapsed."""
        m = self.m
        if kinds is None:
            with m._jobs_lock:
                kinds = [k for k, j in m._jobs.items() if j.crontab is not None]
        if not kinds:
            return 0
        with self._claim_lock:
            now = time.time_ns()
            recs = m.store.claim_recurrences(self.node, kinds, now, now + self.lease_ns)
            n = 0
            for rec in recs:
                if rec.uuid not in self.live:  # else its own, its lease renewed early
                    n += self._resume(rec)
            return n

    def _resume(self, rec: RecurrenceRecord) -> bool:
        """Run a recurrence claimed from the store: same uuid, its next run number; its
        tick, if past, goes through the misfire policy like any late tick."""
        m = self.m
        job = m._jobs.get(rec.kind)
        if job is None or job.crontab is None:
            return False
        try:
            inst = self._instance(rec, job, self.standby.pop(rec.uuid, None))
            since = rec.fire_at - timedelta(microseconds=1)  # its tick is the first
            inst._fires = fire_times(
                job.crontab, job._tz, since, nonexistent=job.nonexistent, ambiguous=job.ambiguous
            )
            first = next(inst._fires)
        except Exception:
            log.exception("jobengine: cannot resume recurrence %s of %r", rec.uuid, rec.kind)
            return False
        now = m._clock.time_ns()
        recorder = m._recorder
        snap = m.store.get_instance(rec.uuid)
        if snap is not None and snap.state is _PROCESSING:
            recorder.next_run(inst, _TERMINATED, now, "the manager running it was lost")
            recorder.next_run(inst, _SCHEDULED, now)
        recorder.log(inst, LogLevel.INFO, now, f"resumed by manager {self.node}", 0)
        recorder.touch(inst)
        due = m._arm_fire(inst, first)
        self.own(inst, rec)
        m._known[rec.uuid] = weakref.ref(inst)
        m._inbox.append((inst, due))
        if m._pool is not None:
            m._pool.doorbell.ring()
        return True

    def renew(self) -> None:
        """Engine thread, every lease / 3: renew the lease on this manager's recurrences
        (dropping any it lost: its lease lapsed and another manager took it over), then
        take over the orphans of managers that died."""
        if time.monotonic() < self.next_renew:
            return
        self.next_renew = time.monotonic() + self.lease_ns / 3e9
        try:
            self._renew_and_claim()
        except StoreError:
            # The store is unreachable: try again next period.  Meanwhile the lease
            # may lapse and another manager take over; claim_tick keeps ticks single.
            log.warning("jobengine: cannot renew recurrence leases", exc_info=True)

    def _renew_and_claim(self) -> None:
        m = self.m
        if self.live:
            mine = m.store.renew_recurrences(self.node, self._lease_until())
            for uuid, inst in list(self.live.items()):
                if uuid not in mine:
                    m._recorder.log(inst, LogLevel.WARN, m._clock.time_ns(),
                                    "another manager took this recurrence over", 0)  # fmt: skip
                    inst._rec = None
                    with m._lock:
                        m._end_recurrence(inst, "taken over", suspend=True)
        self.claim()

    def release(self) -> None:
        """Stopping: hand this manager's recurrences back to the store (the next manager
        resumes them) and settle the futures of stand-ins it will never run."""
        m = self.m
        m._recorder.flush()
        try:
            m.store.release_recurrences(self.node)
        except StoreError:
            log.exception("jobengine: cannot release this manager's recurrences")
        for inst in list(self.standby.values()) + list(self.live.values()):
            settle_suspended(inst)
        self.standby.clear()


__all__ = ["Recurrences", "settle_suspended"]
