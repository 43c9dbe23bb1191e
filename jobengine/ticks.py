"""Recurring instances in the engine: ticks, runs, misfires, and who runs what.

Owns: the engine-side state of every recurring (crontab) instance this manager runs
(its Recurrence: the crontab walk, the fire log, the runs in flight) and the rules
that turn a due tick into a Run: the misfire policy, max_overlap, claim_tick, the end
of a recurrence (canceled or suspended), and resuming recurrences claimed from the
store.  It is handed the engine's small interface (EngineSide below).  Never does:
reach the Manager, or the store except through recurrences.StoredRecurrences.

A recurring instance is its own timer in the compiled core (one entry, due at its next
tick).  When that tick is due the engine calls fire(): the misfire policy decides
whether it runs; if it does, it becomes a Run (instance.py) with its own handle,
attempts and records, dispatched like any instance.  The next tick is armed at once
while fewer than max_overlap runs are in flight, else when one ends (run_ended).

Thread rules: every method runs on the engine thread with the engine's lock held,
except schedule(), claim() and release() (any thread, taking the lock where they touch
the core) and the renew/claim pass (engine thread, lock taken inside).
"""

from __future__ import annotations

import logging
import threading
import uuid as _uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Protocol

from .errors import InvalidArgumentError, JobHandlingError, StoreError
from .instance import Instance, Owner, Run
from .job import task_bytes
from .records import LogLevel, RecurrenceRecord, datetime_to_ns
from .recurrences import StoredRecurrences
from .schedule import fire_times
from .state import State

if TYPE_CHECKING:
    from .job import Job
    from .recorder import Recorder
    from .registry import JobRegistry

log = logging.getLogger("jobengine")

_CANCELED = State.CANCELED
_PROCESSING = State.PROCESSING
_SCHEDULED = State.SCHEDULED
_TERMINATED = State.TERMINATED

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MAX_COUNTED_MISSES = 1000  # past this, missed ticks are skipped over, not counted


class EngineSide(Owner, Protocol):
    """What the ticks need of the engine."""

    core: Any  # the compiled SchedulerCore
    lock: threading.Lock
    recorder: Recorder
    registry: JobRegistry
    clock: Any

    @property
    def running(self) -> bool: ...

    def new_handle(self, unit: Instance | Run) -> int: ...

    def finish(self, unit: Instance | Run) -> None: ...

    def admit(self, inst: Instance, due: int, *, new: bool = True) -> Instance: ...

    def remember(self, inst: Instance) -> None: ...


class Recurrence:
    """The engine's state of one recurring instance."""

    __slots__ = (
        "closed",
        "ending",
        "error",
        "fire_log",
        "fires",
        "lookahead",
        "parked",
        "ran_to_end",
        "record",
        "runs",
        "suspended",
    )

    def __init__(self, fires: Iterator[datetime] | None):
        self.fires = fires  # the crontab walk (None for a stand-in)
        self.lookahead: datetime | None = None  # a fire time pulled from it, not used yet
        self.runs: list[Run] = []  # handed to the engine and not yet ended
        self.fire_log: list[tuple[int, datetime, float]] = []  # (run, fire, jitter)
        self.parked = False  # the next tick waits: max_overlap runs are in flight
        self.ending = False  # canceled or stopping: ends when its last run ends
        self.suspended = False  # ended by stop(), not canceled: the store may resume it
        self.closed = False  # ended: its handle is freed
        self.ran_to_end = False  # its latest ended run was not canceled
        self.record: RecurrenceRecord | None = None  # while this manager owns it
        self.error: BaseException | None = None  # it ended because handling it failed


def _walk(job: Job, since: datetime) -> Iterator[datetime]:
    return fire_times(
        job.crontab, job.tz, since, nonexistent=job.nonexistent, ambiguous=job.ambiguous
    )


class Ticks:
    """The recurring instances of one engine."""

    def __init__(self, engine: EngineSide, stored: StoredRecurrences):
        self.engine = engine
        self.stored = stored
        self.live: dict[str, Instance] = {}  # uuid -> a recurrence this manager runs
        self.standby: dict[str, Instance] = {}  # uuid -> one another manager runs

    # -- a new schedule ------------------------------------------------------------------
    def schedule(self, inst: Instance, key_material: bytes, explicit_start: bool) -> Instance:
        """Start the recurrence of a newly made instance (its scheduled_ns is its start:
        ticks at or after it if the start was explicit, else strictly after it, as
        cron).  The same schedule already in the store, here or in another manager, is
        returned instead of a second one."""
        job = inst.job
        try:  # the first draw, here: a jitter callable that fails is bad input
            jitter = job.jitter_seconds()
        except Exception as e:
            raise InvalidArgumentError(
                f"Job {job.kind!r}: jitter() raised {type(e).__name__}: {e}"
            ) from None
        # (built from whole microseconds: a float of ns would round past the tick)
        start = _EPOCH + timedelta(microseconds=inst.scheduled_ns // 1000 - explicit_start)
        inst.counted = False
        rec_state = inst.recurrence = Recurrence(_walk(job, start))
        try:
            first = next(rec_state.fires)
        except StopIteration:
            raise InvalidArgumentError(f"crontab {job.crontab!r} never fires") from None
        # What the store keeps of the arguments follows its payload policy (JSON, or a
        # signed pickle: PayloadError here, before anything is recorded, if it cannot).
        options = job.stored_overrides()  # a per-schedule crontab and the like
        stored_args = self.stored.store.codec.encode(
            [list(inst.args), inst.kwargs, *([options] if options else [])]
        )
        rec, stored = self.stored.add(inst.uuid_str, job.kind, key_material, stored_args,
                                      inst.priority, first, inst.created_ns)  # fmt: skip
        if stored.uuid != rec.uuid:
            return self._existing(stored, job)
        engine = self.engine
        engine.recorder.created(inst, inst.created_ns)
        due = self.arm_fire(inst, first, jitter)
        self._own(inst, rec)
        return engine.admit(inst, due, new=False)

    def _own(self, inst: Instance, rec: RecurrenceRecord) -> None:
        inst.recurrence.record = rec
        self.live[inst.uuid_str] = inst

    def _existing(self, stored: RecurrenceRecord, job: Job) -> Instance:
        live = self.live.get(stored.uuid)
        if live is None and self.stored.lapsed(stored):
            self.claim([job.kind])  # nobody runs it: from now on, this manager does
            live = self.live.get(stored.uuid)
        if live is not None:
            return live
        standby = self.standby.get(stored.uuid)
        if standby is None:
            standby = self.standby[stored.uuid] = self._instance(stored, job)
            self.engine.remember(standby)
        return standby

    def is_standby(self, inst: Instance) -> bool:
        """Whether inst stands in for a recurrence another manager runs."""
        return self.standby.get(inst.uuid_str) is inst

    def _instance(self, rec: RecurrenceRecord, job: Job, inst: Instance | None = None) -> Instance:
        """An Instance for a stored recurrence (or `inst`, a stand-in, brought up to date)."""
        args, kwargs = self._decode(rec)[:2]
        args = tuple(args)
        if inst is None:
            inst = Instance(self.engine, job, _uuid.UUID(rec.uuid).int, args, kwargs,
                            rec.priority, rec.created_ns)  # fmt: skip
        inst.payload = task_bytes(job, args, kwargs, inst.uuid_str)
        inst.counted = False
        inst.recurrence = Recurrence(None)
        inst.run = rec.run
        inst.state = _SCHEDULED
        inst.scheduled_ns = rec.fire_ns
        return inst

    def _decode(self, rec: RecurrenceRecord) -> list:
        """[args, kwargs] or [args, kwargs, per-schedule options] of a stored recurrence."""
        return self.stored.store.codec.decode(rec.payload, f"recurrence {rec.uuid}")

    def learn_variants(self, kind: str | None = None) -> None:
        """Note the kinds (registered here) whose stored recurrences were scheduled
        with a crontab of their own, so this manager claims them too: their registered
        job may have none.  Once at start and per registration: a store lookup."""
        registry = self.engine.registry
        try:
            records = self.stored.store.lookup_recurrences(kind)
        except StoreError:
            log.warning("jobengine: cannot look up stored recurrences", exc_info=True)
            return
        for rec in records:
            if rec.kind in registry.crontab_kinds() or registry.get(rec.kind) is None:
                continue
            try:
                parts = self._decode(rec)
            except Exception:
                continue
            if len(parts) > 2 and isinstance(parts[2], dict) and parts[2].get("crontab"):
                registry.note_cron_variant(rec.kind)

    def _job_of(self, rec: RecurrenceRecord) -> Job | None:
        """The job a stored recurrence runs as: its kind's registered job, with the
        options it was scheduled with."""
        job = self.engine.registry.get(rec.kind)
        if job is None:
            return None
        parts = self._decode(rec)
        if len(parts) > 2 and parts[2]:
            job = job.derive(**parts[2])
            self.engine.registry.adopt(job)
        return job if job.crontab is not None else None

    # -- arming ticks --------------------------------------------------------------------
    def arm_fire(self, inst: Instance, fire: datetime, jitter: float | None = None) -> int:
        """Make `fire` the instance's next run: draw its jitter (unless given), log both,
        save it to the store (with the next batch); return the due time on the
        monotonic clock."""
        engine = self.engine
        clock = engine.clock
        if jitter is None:
            jitter = inst.job.jitter_seconds()
        fire_ns = datetime_to_ns(fire)
        at_ns = fire_ns + int(jitter * 1e9)
        inst.scheduled_ns = at_ns
        state = inst.recurrence
        state.fire_log.append((inst.run, fire, jitter))
        engine.recorder.log(
            inst,
            LogLevel.DEBUG,
            clock.time_ns(),
            f"run {inst.run} fires at {fire.isoformat()}"
            + (f" + jitter {jitter:.3f} s" if jitter else ""),
            0,
        )
        rec = state.record
        if rec is not None:
            rec.run, rec.fire_ns, rec.lease_until_ns = inst.run, fire_ns, self.stored.lease_until()
            engine.recorder.store_op("save_recurrence", RecurrenceRecord(*rec.as_tuple()))
        return clock.monotonic_ns() + max(0, at_ns - clock.time_ns())

    def _next_fire(self, inst: Instance) -> datetime:
        state = inst.recurrence
        fire = state.lookahead
        if fire is not None:
            state.lookahead = None
            return fire
        return next(state.fires)

    def _arm_next_or_end(self, inst: Instance) -> None:
        """_arm_next; if that fails (a jitter callable raised, the crontab walk broke)
        the recurrence ends TERMINATED with the error, after its runs in flight."""
        try:
            self._arm_next(inst)
        except Exception as e:
            err = JobHandlingError(
                f"job {inst.kind!r}: its next tick could not be armed: {type(e).__name__}: {e}"
            )
            err.__cause__ = e
            log.error("jobengine: %s", err, exc_info=e)
            now = self.engine.clock.time_ns()
            self.engine.recorder.log(inst, LogLevel.ERROR, now, str(err), 0)
            self.end(inst, str(err), suspend=False, error=err)

    def _arm_next(self, inst: Instance) -> None:
        """Arm the next tick as the next run (lock held); the tick may already be past
        after a slow run: _release_fire then applies the misfire policy."""
        engine = self.engine
        inst.run += 1
        engine.recorder.next_run(inst, _SCHEDULED, engine.clock.time_ns())
        due = self.arm_fire(inst, self._next_fire(inst))
        engine.core.add(inst.handle, due, inst.priority)

    # -- a tick is due -------------------------------------------------------------------
    def fire(self, inst: Instance) -> Run | None:
        """A recurring instance's tick is due (lock held): apply the misfire policy,
        then return the Run to dispatch for it (None when it is not to run).  The next
        tick is armed at once while fewer than max_overlap runs are in flight;
        otherwise it waits (parked) until a run ends."""
        engine = self.engine
        state = inst.recurrence
        if inst.cancel_requested or not engine.running:
            cause = "canceled" if inst.cancel_requested else "manager stopped"
            self.end(inst, cause, suspend=not inst.cancel_requested)
            return None
        if not self._release_fire(inst):
            return None
        run_no, fire, jitter = state.fire_log[-1]
        rec = state.record
        if rec is not None and not self.stored.claim_tick(rec, fire):
            # Another manager ran this tick (it took the recurrence over while this one
            # was paused past its lease): never twice.  Move on to the next tick.
            engine.recorder.log(inst, LogLevel.WARN, engine.clock.time_ns(),
                                f"the tick at {fire.isoformat()} was run by another manager;"
                                " skipped", 0)  # fmt: skip
            state.fire_log.pop()
            engine.core.add(inst.handle, self.arm_fire(inst, self._next_fire(inst)),
                            inst.priority)  # fmt: skip
            return None
        run = Run(inst, run_no, datetime_to_ns(fire) + int(jitter * 1e9))
        engine.new_handle(run)
        state.runs.append(run)
        if len(state.runs) < inst.job.max_overlap:
            self._arm_next_or_end(inst)
        else:
            state.parked = True
        return run

    def _release_fire(self, inst: Instance) -> bool:
        """Never stack runs: every tick already past counts as one.  If the latest of
        them is within misfire_grace, or the policy is "coalesce", run once now for it;
        under "skip" with every past tick later than the grace, do not run: arm the
        next tick.  Returns whether to run now."""
        engine = self.engine
        job = inst.job
        state = inst.recurrence
        now = engine.clock.time_ns()
        run_no, fire, jitter = state.fire_log[-1]
        past = [fire]
        more = ""  # "+" when there were too many missed ticks to count them all
        while True:
            nxt = self._next_fire(inst)
            if datetime_to_ns(nxt) > now:
                state.lookahead = nxt
                break
            past.append(nxt)
            if len(past) == MAX_COUNTED_MISSES:
                # Far behind (a per-second crontab after a day's stop is 86,400 ticks):
                # jump to now rather than walk every tick under the lock.
                past.append(self._jump_to_now(inst, now, past[-2], past[-1]))
                more = "+"
                break
        latest = past[-1]
        late_ns = now - datetime_to_ns(latest) - int(jitter * 1e9)
        on_time = late_ns <= job.misfire_grace * 1e9
        grace = f"grace {job.misfire_grace:g} s"
        if on_time or job.misfire == "coalesce":
            if len(past) > 1:
                state.fire_log[-1] = (run_no, latest, jitter)
                engine.recorder.log(inst, LogLevel.WARN, now,
                                    f"{len(past) - 1}{more} missed tick(s) coalesced into run "
                                    f"{run_no} (misfire={job.misfire}, {grace})", 0)  # fmt: skip
            elif not on_time:  # late (no worker was free, or the manager was behind)
                engine.recorder.log(inst, LogLevel.WARN, now,
                                    f"run {run_no} starts {late_ns / 1e9:.3f} s after its tick "
                                    f"(misfire=coalesce, {grace})", 0)  # fmt: skip
            return True
        engine.recorder.log(inst, LogLevel.WARN, now,
                            f"{len(past)}{more} missed tick(s) skipped (misfire=skip, {grace})",
                            0)  # fmt: skip
        state.fire_log.pop()
        due = self.arm_fire(inst, self._next_fire(inst))
        engine.core.add(inst.handle, due, inst.priority)
        return False

    def _jump_to_now(self, inst: Instance, now: int, a: datetime, b: datetime) -> datetime:
        """Restart inst's crontab walk a few tick intervals (b - a) before `now`; return
        the latest tick at or before now (b if the new walk finds none earlier than
        now), leaving the first tick after now as the lookahead."""
        state = inst.recurrence
        step_us = max(1, (datetime_to_ns(b) - datetime_to_ns(a)) // 1000)
        fires = _walk(inst.job, _EPOCH + timedelta(microseconds=now // 1000 - 4 * step_us))
        latest = b
        for t in fires:
            if datetime_to_ns(t) > now:
                state.lookahead = t
                break
            latest = max(latest, t)
        state.fires = fires
        return latest

    def too_late(self, run: Run) -> bool:
        """Under misfire="skip", whether a run that waited for a worker (the pool was
        saturated) would now start later than misfire_grace after its tick."""
        job = run.job
        if job.misfire != "skip" or run.attempts:  # a retry is late by design
            return False
        return self.engine.clock.time_ns() - run.due_ns > job.misfire_grace * 1e9

    def skip_late_run(self, run: Run) -> None:
        """A run too late to start under misfire="skip" ends unrun (lock not held)."""
        engine = self.engine
        now = engine.clock.time_ns()
        job = run.job
        late = (now - run.due_ns) / 1e9
        cause = (
            f"missed: a worker was free only {late:.3f} s after its tick "
            f"(misfire=skip, grace {job.misfire_grace:g} s)"
        )
        engine.recorder.log(run.parent, LogLevel.WARN, now, f"run {run.run} {cause}", 0)
        run.completed_ns = now
        engine.recorder.transition(run, _CANCELED, now, cause)
        self.run_ended(run)

    # -- runs end, recurrences end -------------------------------------------------------
    def run_ended(self, run: Run) -> None:
        """A run reached its final state, recorded (lock not held): free it, then go on
        (arm a parked tick) or, when the recurrence is ending, end it with its last run."""
        engine = self.engine
        inst = run.parent
        state = inst.recurrence
        engine.finish(run)
        state.ran_to_end = run.state is not _CANCELED
        inst.completed_ns = run.completed_ns
        with engine.lock:
            state.runs.remove(run)
            if inst.cancel_requested or state.ending or not engine.running:
                cause = "canceled" if inst.cancel_requested else "manager stopped"
                self.end(inst, cause, suspend=not inst.cancel_requested)
            elif state.parked:
                state.parked = False
                self._arm_next_or_end(inst)
            inst.sync_state()

    def end(
        self, inst: Instance, cause: str, suspend: bool, error: BaseException | None = None
    ) -> None:
        """End a recurring instance (lock held): disarm its tick and cancel its runs not
        yet handed to a worker; the instance ends when its last run in flight does.
        suspend (the manager stops): the next run keeps its SCHEDULED record, open, and
        the store keeps the recurrence for a manager started on it later; otherwise
        (canceled) both end, recorded CANCELED.  error: handling it failed (its jitter
        raised...): it ends TERMINATED and its Future gets the error."""
        engine = self.engine
        now = engine.clock.time_ns()
        rec = engine.recorder
        state = inst.recurrence
        if not state.ending:
            state.ending = True
            state.suspended = suspend
            state.error = error
            if not suspend:  # canceled: gone from the store too
                self.forget(inst)
            if inst.handle >= 0:
                engine.core.cancel(inst.handle)
            # Unless parked (its tick not armed yet), the next run has an open SCHEDULED
            # record, armed or firing right now.
            if not state.parked and not suspend:
                rec.next_run(inst, _CANCELED, now, cause)
            for run in [r for r in state.runs if r.worker is None]:
                if engine.core.cancel(run.handle):
                    run.completed_ns = now
                    rec.transition(run, _CANCELED, now, cause)
                    state.runs.remove(run)
                    engine.finish(run)
        if state.runs or state.closed:
            return
        state.closed = True
        self.live.pop(inst.uuid_str, None)
        engine.finish(inst)  # frees its handle this turn
        if state.suspended:
            if state.parked and state.record is not None and state.ran_to_end:
                # Its latest run ended on its own: the store must resume at the tick
                # after it, or the next manager would run that tick again.
                state.parked = False
                inst.run += 1
                rec.next_run(inst, _SCHEDULED, now)
                self.arm_fire(inst, self._next_fire(inst))
            state.record = None
            inst.state = _SCHEDULED
            rec.log(inst, LogLevel.INFO, now, f"suspended: {cause}", 0)
            rec.defer(inst.settle_suspended)
        elif state.error is not None:
            inst.state = _TERMINATED
            inst.completed_ns = now
            rec.defer(inst.settle_run, None, state.error)
        else:
            inst.state = _CANCELED
            inst.completed_ns = now
            rec.defer(inst.cancel_future)
        rec.touch(inst)

    def canceled_while_queued(self, inst: Instance) -> None:
        """inst, recurring, was canceled before its tick fired (lock held)."""
        inst.recurrence.closed = True
        self.forget(inst)

    def forget(self, inst: Instance) -> None:
        """inst was canceled: it leaves the store too (with the next batch)."""
        self.live.pop(inst.uuid_str, None)
        state = inst.recurrence
        if state.record is not None:
            self.engine.recorder.store_op("delete_recurrence", inst.uuid_str)
            state.record = None

    # -- who runs what -------------------------------------------------------------------
    def claim(self, kinds: list[str] | None = None) -> int:
        """Take over the store's recurrences of `kinds` (default: every crontab job
        registered) that no manager owns or whose owner's lease lapsed, and resume them."""
        if kinds is None:
            kinds = self.engine.registry.crontab_kinds()
        n = 0
        for rec in self.stored.claim(kinds):
            if rec.uuid not in self.live:  # else its own, its lease renewed early
                n += self._resume(rec)
        return n

    def _resume(self, rec: RecurrenceRecord) -> bool:
        """Run a recurrence claimed from the store: same uuid, its next run number; its
        tick, if past, goes through the misfire policy like any late tick."""
        engine = self.engine
        try:
            job = self._job_of(rec)
        except Exception:
            log.exception("jobengine: cannot read recurrence %s of %r", rec.uuid, rec.kind)
            return False
        if job is None:
            return False
        try:
            inst = self._instance(rec, job, self.standby.pop(rec.uuid, None))
            state = inst.recurrence
            state.fires = _walk(job, rec.fire_at - timedelta(microseconds=1))  # its tick first
            first = next(state.fires)
        except Exception:
            log.exception("jobengine: cannot resume recurrence %s of %r", rec.uuid, rec.kind)
            return False
        now = engine.clock.time_ns()
        recorder = engine.recorder
        snap = self.stored.snapshot(rec.uuid)
        if snap is not None and snap.state is _PROCESSING:
            recorder.next_run(inst, _TERMINATED, now, "the manager running it was lost")
            recorder.next_run(inst, _SCHEDULED, now)
        recorder.log(inst, LogLevel.INFO, now, f"resumed by manager {self.stored.node}", 0)
        recorder.touch(inst)
        due = self.arm_fire(inst, first)
        self._own(inst, rec)
        engine.remember(inst)
        engine.admit(inst, due, new=False)
        return True

    def renew(self) -> None:
        """Engine thread, every lease / 3: renew the lease on this manager's recurrences
        (dropping any it lost: its lease lapsed and another manager took it over), then
        take over the orphans of managers that died."""
        if not self.stored.renewal_due():
            return
        try:
            self._renew_and_claim()
        except StoreError:
            # The store is unreachable: try again next period.  Meanwhile the lease
            # may lapse and another manager take over; claim_tick keeps ticks single.
            log.warning("jobengine: cannot renew recurrence leases", exc_info=True)

    def _renew_and_claim(self) -> None:
        engine = self.engine
        if self.live:
            mine = self.stored.renew()
            for uuid, inst in list(self.live.items()):
                if uuid not in mine:
                    engine.recorder.log(inst, LogLevel.WARN, engine.clock.time_ns(),
                                        "another manager took this recurrence over", 0)  # fmt: skip
                    inst.recurrence.record = None
                    with engine.lock:
                        self.end(inst, "taken over", suspend=True)
        self.claim()

    def release(self) -> None:
        """Stopping: hand this manager's recurrences back to the store (the next manager
        resumes them) and settle the futures of stand-ins it will never run."""
        try:
            self.engine.recorder.sync()  # their last saved ticks first
        except StoreError:
            log.warning("jobengine: releasing recurrences with records not written", exc_info=True)
        self.stored.release()
        for inst in list(self.standby.values()) + list(self.live.values()):
            inst.settle_suspended()
        self.standby.clear()


__all__ = ["MAX_COUNTED_MISSES", "EngineSide", "Recurrence", "Ticks"]
