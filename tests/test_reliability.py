"""Faults: crash table, chaos, hard timeouts, cancellation, retries, recycling, shutdown."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import CancelledError
from pathlib import Path

import jobs
import psutil
import pytest
from conftest import all_workers_up, wait_for

from jobengine import (
    Job,
    JobTimeout,
    Manager,
    MemoryLimitExceeded,
    Query,
    SerializationError,
    State,
    WorkerCrashed,
    exponential_backoff,
)

# One row per failure: executor, args, job options, final state, exception, cause, worker dies
CRASH_TABLE = [
    ("raises", jobs.fail, ("bad",), {}, State.TERMINATED, ValueError, "ValueError: bad", False),
    ("sys.exit", jobs.exit_interpreter, (3,), {}, State.TERMINATED, SystemExit, "SystemExit",
     False),
    ("os._exit", jobs.hard_exit, (7,), {}, State.TERMINATED, WorkerCrashed, "exit code 7", True),
    ("SIGKILL", jobs.kill_self, (9,), {}, State.TERMINATED, WorkerCrashed, "signal 9", True),
    ("segfault", jobs.segfault, (), {}, State.TERMINATED, WorkerCrashed, "signal 11", True),
    ("result unpicklable", jobs.unpicklable_result, (), {}, State.TERMINATED, SerializationError,
     "cannot be pickled", False),
    # A timeout interrupts the job (JobTimeout raised inside it); the worker lives on...
    ("sleeps past timeout", jobs.hang_in_c, (30,), {"timeout": 0.3}, State.TIMED_OUT,
     JobTimeout, "timed out after 0.3 s", False),
    ("ignores SIGTERM past timeout", jobs.hang_ignoring_sigterm, (30,), {"timeout": 0.3},
     State.TIMED_OUT, JobTimeout, "timed out after 0.3 s", False),
    # ... unless the interrupt cannot land (C code that never returns to the
    # interpreter, modelled by blocking the signal) or the job swallows it: then the
    # hard kill follows kill_grace later.
    ("blocks the interrupt past timeout", jobs.hang_blocking_interrupts, (30,),
     {"timeout": 0.3}, State.TIMED_OUT, JobTimeout, "signal 9", True),
    ("swallows the interrupt past timeout", jobs.swallow_interrupts, (30,), {"timeout": 0.3},
     State.TIMED_OUT, JobTimeout, "signal 9", True),
    ("memory over the limit", jobs.hog_memory, (400, 5), {}, State.TERMINATED,
     MemoryLimitExceeded, "max_memory_per_worker", True),
]  # fmt: skip


@pytest.fixture(scope="module")
def crash_mgr():
    m = Manager(num_workers=2, max_memory_per_worker=200 << 20, kill_grace=0.3).start()
    wait_for(all_workers_up(m))
    yield m
    m.stop()


@pytest.mark.parametrize("row", CRASH_TABLE, ids=[r[0] for r in CRASH_TABLE])
def test_crash_table(crash_mgr, row):
    name, fn, args, options, final, exc_type, cause, worker_dies = row
    m = crash_mgr
    deaths_before = len([e for e in m.worker_events if e.kind == "died"])
    ji = m.schedule_job(Job(f"crash-{name}", fn, **options), args=args)
    exc = ji.exception(timeout=30)
    assert isinstance(exc, exc_type), (exc_type, exc)
    assert ji.state is final
    last = m.lookup_instance_history(ji)[-1]
    assert last.state is final and cause in last.cause, last
    assert any(cause in r.message for r in m.lookup_instance_logs(ji)), m.lookup_instance_logs(ji)
    deaths = [e for e in m.worker_events if e.kind == "died"][deaths_before:]
    assert bool(deaths) == worker_dies, deaths
    # the worker is replaced and the pool still serves
    wait_for(lambda: len([w for w in m.workers if w.pid]) == 2)
    assert m.submit(jobs.add, 2, 2).result(timeout=10) == 4


def test_unpicklable_argument_is_refused_before_anything_is_recorded(mgr):
    before = len(mgr.lookup_instances())
    with pytest.raises(SerializationError):
        mgr.schedule_job(Job("unpicklable-arg", jobs.echo), args=(threading.Lock(),))
    assert len(mgr.lookup_instances()) == before


def test_timeout_is_retried_while_retries_are_left():
    with Manager(num_workers=1, kill_grace=0.2) as m:
        ji = m.schedule_job(Job("slow", jobs.hang_in_c, timeout=0.2, max_retries=1), args=(10,))
        assert isinstance(ji.exception(timeout=30), JobTimeout)
        states = [r.state for r in m.lookup_instance_history(ji)]
        assert states.count(State.TIMED_OUT) == 2 and ji.attempts == 2
        assert states[-1] is State.TIMED_OUT


def test_chaos_nothing_lost_nothing_stuck(tmp_path):
    """2,000 short jobs, max_retries=3, while a thread SIGKILLs a random worker every ~50 ms."""
    runs = tmp_path / "runs"
    n = 2000
    with Manager(num_workers=2) as m:
        wait_for(all_workers_up(m))
        job = Job("chaos", jobs.record_run, max_retries=3)
        fs = [m.schedule_job(job, args=(str(runs), i, 0.001)) for i in range(n)]
        stop = threading.Event()
        kills = []

        def killer():
            import random

            while not stop.wait(0.05):
                pids = [w.pid for w in m.workers if w.pid]
                if pids:
                    pid = random.choice(pids)
                    try:
                        os.kill(pid, signal.SIGKILL)
                        kills.append(pid)
                    except ProcessLookupError:
                        pass

        t = threading.Thread(target=killer)
        t.start()
        try:
            assert m.wait(timeout=120), "instances left unfinished"
        finally:
            stop.set()
            t.join()
    assert len(kills) >= 5
    finals = [f.state for f in fs]
    assert all(s & State.FINAL for s in finals)
    assert State.PROCESSING not in finals and State.SCHEDULED not in finals
    completed = sum(s is State.COMPLETED for s in finals)
    failed = sum(s is State.TERMINATED for s in finals)
    assert completed + failed == n
    assert completed >= n - 5  # four kills of one instance in a row is not expected
    by_key: dict[int, list[int]] = {}
    for line in runs.read_text().split("\n")[:-1]:
        key, _pid, t_ns = map(int, line.split())
        by_key.setdefault(key, []).append(t_ns)
    for i, f in enumerate(fs):
        ran = by_key.get(i, [])
        assert len(ran) <= f.attempts
        # nothing ran after the instance reached its final state
        assert all(t <= f.completed_ns for t in ran)
        if f.state is State.COMPLETED:
            assert ran


def test_cancel_running_interrupts_only_its_job_and_is_never_retried(tmp_path):
    with Manager(num_workers=2) as m:
        wait_for(all_workers_up(m))
        path = tmp_path / "cleanup"
        victim = m.schedule_job(
            Job("victim", jobs.cleanup_on_interrupt, max_retries=3), args=(str(path), 30)
        )
        bystander = m.schedule_job(Job("bystander", jobs.sleep_then), args=(1.0, "ok"))
        wait_for(lambda: victim.running() and bystander.running())
        vpid = next(w.pid for w in m.workers if w.current == victim.uuid_str)
        canceled = m.cancel_instances(Query(uuid=victim.uuid))
        assert canceled == [victim]
        with pytest.raises(CancelledError):
            victim.result(timeout=10)
        assert victim.state is State.CANCELED and victim.attempts == 1
        assert bystander.result(timeout=10) == "ok"  # its worker was not touched
        # JobCanceled was raised inside the job: its finally ran, and its worker lives on
        assert path.read_text() == "cleaned up\n"
        assert vpid in {w.pid for w in m.workers}
        assert not [e for e in m.worker_events if e.kind == "died"]
        history = [r.state for r in m.lookup_instance_history(victim)]
        assert history[-1] is State.CANCELED and history.count(State.PROCESSING) == 1
        assert "interrupted" in m.lookup_instance_logs(victim)[-1].message


def test_cancel_of_a_job_that_swallows_the_interrupt_kills_its_worker(tmp_path):
    path = tmp_path / "swallowed"
    with Manager(num_workers=1, kill_grace=0.3) as m:
        ji = m.schedule_job(Job("stubborn", jobs.swallow_interrupts), args=(30, str(path)))
        wait_for(ji.running)
        t = time.monotonic()
        m.cancel_instances(Query(uuid=ji.uuid))
        with pytest.raises(CancelledError):
            ji.result(timeout=10)
        assert time.monotonic() - t >= 0.25  # the grace was given
        assert path.read_text().startswith("swallowed")  # the interrupt did land
        death = [e for e in m.worker_events if e.kind == "died"][-1]
        assert death.signal == 9 and death.reason == "cancel"
        assert m.lookup_instance_history(ji)[-1].cause == "canceled while running"
        assert "killed by signal 9" in m.lookup_instance_logs(ji)[-1].message


def test_backoff_waits_in_the_timer_heap_not_in_a_worker():
    with Manager(num_workers=1) as m:
        wait_for(all_workers_up(m))
        t = time.monotonic()
        ji = m.schedule_job(Job("backoff", jobs.fail, max_retries=2, backoff=0.3))
        # while it backs off, the only worker is free for others
        time.sleep(0.1)
        assert m.submit(jobs.add, 1, 1).result(timeout=1) == 2
        ji.exception(timeout=10)
        assert time.monotonic() - t >= 0.6
        history = m.lookup_instance_history(ji)
        sched = [r.time_ns for r in history if r.state is State.SCHEDULED][1:]
        starts = [r.time_ns for r in history if r.state is State.PROCESSING][1:]
        assert all(s - q >= 0.29e9 for q, s in zip(sched, starts, strict=True))


def test_exponential_backoff_helper():
    f = exponential_backoff(base=0.1, factor=2, maximum=0.5, jitter=0)
    assert [f(n) for n in (1, 2, 3, 4, 5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    g = exponential_backoff(base=1, jitter=0.5)
    assert all(0.5 <= g(1) <= 1.5 for _ in range(100))
    with pytest.raises(ValueError):
        exponential_backoff(factor=0.5)


def test_recycling_by_job_count_loses_and_fails_nothing():
    with Manager(num_workers=2, max_jobs_per_worker=5) as m:
        fs = [m.submit(jobs.pid) for _ in range(40)]
        pids = [f.result(timeout=30) for f in fs]
    counts = {p: pids.count(p) for p in set(pids)}
    assert max(counts.values()) <= 5 and len(counts) >= 8
    assert all(f.state is State.COMPLETED for f in fs)
    assert len([e for e in m.worker_events if e.kind == "born"]) >= 8


def test_stop_with_grace_kills_what_still_runs():
    m = Manager(num_workers=1).start()
    wait_for(all_workers_up(m))
    running = m.schedule_job(Job("long", jobs.hang_in_c, max_retries=2), args=(30,))
    queued = m.submit(jobs.noop)
    wait_for(running.running)
    t = time.monotonic()
    m.stop(grace=0.3)
    assert time.monotonic() - t < 5
    assert running.state is State.CANCELED and running.cancelled()
    assert queued.cancelled()
    assert "manager stopped" in m.lookup_instance_history(running)[-1].cause


HEADER = """
import os, sys, time
sys.path.insert(0, {tests!r})
import jobs
from jobengine import Manager, Job


def up(m, n):
    while len([w for w in m.workers if w.pid]) < n:
        time.sleep(0.01)
"""


def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "app.py"
    path.write_text(HEADER.format(tests=str(Path(__file__).parent)) + textwrap.dedent(body))
    return path


def _start_ready(app: Path) -> subprocess.Popen:
    """Run the script; return once it has printed READY."""
    proc = subprocess.Popen([sys.executable, str(app)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "READY"
    return proc


def _pids_of(proc_pid: int) -> list[int]:
    return [c.pid for c in psutil.Process(proc_pid).children(recursive=True)]


def _all_gone(pids: list[int]):
    """A predicate: none of `pids` is still running (a zombie awaiting its reaper is gone)."""

    def alive(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    return lambda: not any(alive(p) for p in pids)


def test_sigterm_to_the_manager_process_stops_it_gracefully(tmp_path):
    app = _script(
        tmp_path,
        """
        m = Manager(num_workers=2, kill_grace=0.5).start()
        up(m, 2)
        ji = m.schedule_job(Job("long", jobs.hang_in_c), args=(60,))
        while not ji.running():
            time.sleep(0.01)
        try:  # READY inside the try: the signal may land the moment it is written
            print("READY", flush=True)
            ji.result()
        finally:
            m.stop()
            print("STATE", ji.state.name, flush=True)
        """,
    )
    proc = _start_ready(app)
    children = _pids_of(proc.pid)
    assert len(children) >= 3  # supervisor + 2 workers
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 143
    assert "STATE CANCELED" in out
    wait_for(_all_gone(children), timeout=5)


def test_sigkill_of_the_manager_process_takes_every_child_within_2s(tmp_path):
    app = _script(
        tmp_path,
        """
        m = Manager(num_workers=2).start()
        up(m, 2)
        long = Job("long", jobs.hang_in_c)
        fs = [m.schedule_job(long, args=(60,)) for _ in range(2)]
        while not all(f.running() for f in fs):
            time.sleep(0.01)
        print("READY", flush=True)
        time.sleep(60)
        """,
    )
    proc = _start_ready(app)
    children = _pids_of(proc.pid)
    assert len(children) >= 3
    proc.kill()
    proc.wait()
    t = time.monotonic()
    wait_for(_all_gone(children), timeout=2.0)
    assert time.monotonic() - t <= 2.0


def test_sigint_stops_gracefully_then_raises_keyboard_interrupt(tmp_path):
    app = _script(
        tmp_path,
        """
        m = Manager(num_workers=1, kill_grace=0.3).start()
        up(m, 1)
        running = m.schedule_job(Job("long", jobs.hang_in_c), args=(60,))
        queued = m.submit(jobs.noop)
        while not running.running():
            time.sleep(0.01)
        try:  # READY inside the try: the signal may land the moment it is written
            print("READY", flush=True)
            running.result()
        except KeyboardInterrupt:
            m.stop()
            print("INTERRUPTED", running.state.name, queued.state.name, flush=True)
        """,
    )
    proc = _start_ready(app)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "INTERRUPTED CANCELED CANCELED" in out
