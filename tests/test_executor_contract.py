"""Manager as a concurrent.futures.Executor: what the stdlib documents for
ProcessPoolExecutor, checked against Manager (and, where it helps, side by side with
ProcessPoolExecutor itself)."""

from __future__ import annotations

import asyncio
import functools
import gc
import multiprocessing
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from concurrent.futures import Executor, as_completed, wait
from concurrent.futures.process import BrokenProcessPool

import jobs
import psutil
import pytest
from conftest import all_workers_up, wait_for

from jobengine import (
    InitializerError,
    Instance,
    Manager,
    ManagerStateError,
    MemoryStore,
    SerializationError,
    State,
    WorkerCrashed,
)
from jobengine.errors import RemoteTraceback

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)


def run_script(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, TESTS]))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=TESTS,
    )


# -- construction ------------------------------------------------------------------------
def test_is_an_executor_built_like_the_stdlib_pool():
    with Manager(2) as m:  # max_workers positionally
        assert isinstance(m, Executor) and m.num_workers == 2
    m = Manager(max_workers=3, mp_context=multiprocessing.get_context("spawn"))
    assert m.num_workers == 3
    m.shutdown()


@pytest.mark.parametrize("n", [0, -1])
def test_a_bad_max_workers_is_named_as_the_user_spelled_it(n):
    with pytest.raises(ValueError, match="max_workers must be greater than 0"):
        Manager(max_workers=n)
    with pytest.raises(ValueError, match="num_workers must be greater than 0"):
        Manager(num_workers=n)


def test_store_is_keyword_only_and_the_two_worker_counts_exclude_each_other():
    with pytest.raises(TypeError):
        Manager(2, MemoryStore())
    with pytest.raises(TypeError, match="not both"):
        Manager(2, max_workers=2)
    with pytest.raises(TypeError, match="not both"):
        Manager(max_jobs_per_worker=2, max_tasks_per_child=2)


def test_initializer_runs_once_in_every_worker_before_its_first_job(tmp_path):
    path = tmp_path / "inits"
    with Manager(2, initializer=jobs.init_state, initargs=("ready", str(path))) as m:
        wait_for(all_workers_up(m))
        seen = {f.result(timeout=30) for f in [m.submit(jobs.read_init_state) for _ in range(20)]}
        pids = {w.pid for w in m.workers}
    assert seen <= {("ready", 1)} and seen  # every job saw it, and it ran once per worker
    assert sorted(int(x) for x in path.read_text().split()) == sorted(pids)


def test_initializer_args_may_carry_a_spawn_context_queue():
    # As for a spawned child: a Queue made in a spawn context reaches every worker.
    q = multiprocessing.get_context("spawn").Queue()
    with Manager(2, initializer=jobs.init_put, initargs=(q, "hello")) as m:
        m.submit(jobs.noop).result(timeout=30)
        wait_for(all_workers_up(m))
        got = {q.get(timeout=10) for _ in range(2)}
        assert got == {("hello", w.pid) for w in m.workers}
    q.close()


def test_initializer_args_from_a_fork_context_are_refused_clearly():
    q = multiprocessing.get_context("fork").Queue()
    with pytest.raises(SerializationError, match="spawn"):
        Manager(1, initializer=jobs.init_put, initargs=(q, "x"))


def test_a_failing_initializer_breaks_the_manager_once_and_is_recorded():
    m = Manager(2, initializer=jobs.init_fails)
    f = m.submit(jobs.noop)
    exc = f.exception(timeout=30)
    assert isinstance(exc, InitializerError) and isinstance(exc, BrokenProcessPool)
    assert "error in initializer" in str(exc)
    assert f.state is State.TERMINATED
    assert "initializer" in m.lookup_instance_history(f)[-1].cause
    wait_for(lambda: m.broken is not None)
    with pytest.raises(BrokenProcessPool):
        m.submit(jobs.noop)
    time.sleep(1.0)  # no respawn loop: only the first workers ever died
    deaths = [e for e in m.worker_events if e.kind == "died"]
    assert len(deaths) <= 2 and all(e.exitcode == 1 for e in deaths)
    m.shutdown()


def test_max_tasks_per_child_recycles_workers():
    with Manager(1, max_tasks_per_child=2) as m:
        pids = [m.submit(jobs.pid).result(timeout=30) for _ in range(4)]
    assert pids[0] == pids[1] != pids[2] == pids[3]


# -- no start needed ---------------------------------------------------------------------
def test_submit_and_map_start_a_manager_that_was_never_started():
    m = Manager(2)
    assert m.submit(jobs.add, 1, 2).result(timeout=30) == 3
    m.shutdown()
    m = Manager(2)
    assert list(m.map(jobs.add, [1, 2], [3, 4])) == [4, 6]
    m.shutdown()


def test_schedule_before_start_waits_for_start():
    m = Manager(1)
    ji = m.schedule_job(jobs_job("before-start"), args=(1, 2))
    time.sleep(0.2)
    assert ji.state is State.SCHEDULED and not ji.done()
    m.start()
    assert ji.result(timeout=30) == 3
    m.shutdown()


def jobs_job(kind):
    from jobengine import Job

    return Job(kind, jobs.add)


def test_shutdown_of_a_never_started_manager_runs_what_was_scheduled():
    m = Manager(1)
    ji = m.schedule_job(jobs_job("never-started"), args=(2, 3))
    m.shutdown(wait=True)
    assert ji.result(timeout=0) == 5


def test_stop_of_a_never_started_manager_cancels_what_was_scheduled():
    m = Manager(1)
    ji = m.schedule_job(jobs_job("canceled-unstarted"), args=(2, 3))
    m.stop()
    assert ji.cancelled() and ji.state is State.CANCELED


# -- shutdown ----------------------------------------------------------------------------
def test_shutdown_without_waiting_returns_at_once_and_the_work_still_runs():
    m = Manager(1)
    f = m.submit(jobs.sleep_then, 0.5, "done")
    t = time.monotonic()
    m.shutdown(wait=False)
    assert time.monotonic() - t < 0.3
    assert f.result(timeout=30) == "done" and not f.cancelled()


def test_shutdown_cancel_futures_cancels_what_no_worker_took():
    m = Manager(1)
    fs = [m.submit(jobs.sleep_then, 0.05) for _ in range(30)]
    m.shutdown(cancel_futures=True)
    cancelled = [f for f in fs if f.cancelled()]
    ran = [f for f in fs if not f.cancelled()]
    assert len(cancelled) > 15 and ran
    assert all(f.done() and f.exception() is None for f in ran)
    assert all(f.state is State.CANCELED for f in cancelled)


def test_submit_after_shutdown_raises_runtime_error():
    m = Manager(1)
    m.submit(jobs.noop).result(timeout=30)
    m.shutdown()
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        m.submit(jobs.noop)
    with pytest.raises(ManagerStateError):  # the go-job verbs: a RuntimeError too
        m.schedule_job(jobs_job("late"))
    assert issubclass(ManagerStateError, RuntimeError)


def test_submit_from_an_atexit_hook_raises_runtime_error():
    out = run_script("""
        import atexit
        @atexit.register
        def run_last():
            try:
                m.submit(id, None)
            except RuntimeError as e:
                print("runtime-error:", e)
        from jobengine import Manager
        m = Manager(2)
        m.submit(id, 42).result()
    """)
    assert out.returncode == 0, out.stderr
    assert "runtime-error: cannot schedule new futures after interpreter shutdown" in out.stdout


# -- interpreter exit and garbage collection ---------------------------------------------
def test_a_program_that_never_shuts_down_waits_for_its_futures():
    out = run_script("""
        import jobs
        from jobengine import Manager
        m = Manager(2)
        m.submit(jobs.sleep_then, 0.5, None)
        m.submit(print, "apple", flush=True)
        m.submit(jobs.append_line, "/dev/stdout", "banana")
    """)
    assert out.returncode == 0 and not out.stderr, out.stderr
    assert sorted(out.stdout.split()) == ["apple", "banana"]


def test_shutdown_without_wait_then_exit_still_runs_the_work():
    out = run_script("""
        import jobs
        from jobengine import Manager
        m = Manager(1)
        m.submit(jobs.append_line, "/dev/stdout", "late-apple")
        m.shutdown(wait=False)
    """)
    assert out.returncode == 0 and not out.stderr, out.stderr
    assert out.stdout.split() == ["late-apple"]


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_collected_manager_stops_its_supervisor_and_workers():
    before = {c.pid for c in psutil.Process().children()}
    m = Manager(2)
    m.submit(jobs.noop).result(timeout=30)
    wait_for(all_workers_up(m))
    workers = [w.pid for w in m.workers]
    (supervisor,) = {c.pid for c in psutil.Process().children()} - before
    del m
    gc.collect()
    wait_for(lambda: all(_gone(p) for p in [*workers, supervisor]), timeout=15)


# -- exceptions --------------------------------------------------------------------------
def test_a_dead_worker_is_a_broken_process_pool_and_the_pool_serves_on():
    with Manager(1) as m:
        f = m.submit(jobs.hard_exit, 99)
        exc = f.exception(timeout=30)
        assert isinstance(exc, BrokenProcessPool) and isinstance(exc, WorkerCrashed)
        assert isinstance(exc.__cause__, RemoteTraceback)
        assert "terminated abruptly with exit code 99" in exc.__cause__.tb
        assert m.submit(jobs.add, 1, 1).result(timeout=30) == 2  # unlike the stdlib pool


def test_a_failed_job_carries_the_worker_traceback_as_its_cause(capsys):
    with Manager(1) as m:
        exc = m.submit(jobs.raise_runtime_error).exception(timeout=30)
    assert type(exc) is RuntimeError and exc.args == (123,)
    assert isinstance(exc.__cause__, RemoteTraceback)
    assert "raise RuntimeError(123)  # the line the remote traceback" in exc.__cause__.tb
    try:
        raise exc
    except RuntimeError:
        sys.excepthook(*sys.exc_info())
    assert "raise RuntimeError(123)" in capsys.readouterr().err


def test_pickling_failures_are_pickling_errors():
    with Manager(1) as m:
        arg = m.submit(jobs.echo, threading.Lock()).exception(timeout=30)
        res = m.submit(jobs.unpicklable_result).exception(timeout=30)
    for exc in (arg, res):
        assert isinstance(exc, pickle.PicklingError) and isinstance(exc, SerializationError)


# -- no leaks ----------------------------------------------------------------------------
def test_a_submitted_callable_is_not_kept_after_its_future_settles():
    with Manager(1) as m:
        holder = jobs.Holder()
        collected = threading.Event()
        ref = weakref.ref(holder, lambda _: collected.set())
        f = m.submit(holder.method)
        assert f.result(timeout=30) == 1
        del holder
        assert collected.wait(10), "the bound method's object is still referenced"
        assert ref() is None and f.result() == 1  # the future stays readable


def test_distinct_partials_leave_no_jobs_behind():
    with Manager(2) as m:
        before = len(m.list_jobs())
        fs = [m.submit(functools.partial(jobs.add, i), 1) for i in range(200)]
        assert [f.result(timeout=30) for f in fs] == [i + 1 for i in range(200)]
        wait_for(lambda: len(m.list_jobs()) == before)


def test_map_keeps_no_result_it_has_yielded():
    with Manager(2) as m:
        for chunksize in (1, 3):
            for obj in m.map(jobs.make_holder, range(10), chunksize=chunksize):
                ref = weakref.ref(obj)
                del obj
                gc.collect()
                assert ref() is None


# -- processes ---------------------------------------------------------------------------
def test_multiprocessing_manager_proxies_work_in_jobs():
    with multiprocessing.Manager() as proxies, Manager(1) as m:
        q, ev = proxies.Queue(), proxies.Event()
        f = m.submit(jobs.put_and_wait, q, ev, "seen")
        assert q.get(timeout=30) == "seen"
        ev.set()
        assert f.result(timeout=30) == "seen"


def test_workers_have_readable_names():
    with Manager(1) as m:
        name, cmdline = m.submit(jobs.proc_identity).result(timeout=30)
        wait_for(all_workers_up(m))
        assert psutil.Process(m.workers[0].pid).cmdline()[0].startswith("jobengine worker 0")
    assert name == "jobengine worker 0" and cmdline.startswith("jobengine worker 0")


# -- the rest of the contract ------------------------------------------------------------
def test_wait_as_completed_and_run_in_executor():
    with Manager(2) as m:
        fs = [m.submit(jobs.add, i, i) for i in range(10)]
        _done, not_done = wait(fs)
        assert not not_done and sorted(f.result() for f in as_completed(fs)) == [
            2 * i for i in range(10)
        ]

        async def main():
            loop = asyncio.get_running_loop()
            return await asyncio.gather(
                *(loop.run_in_executor(m, jobs.add, i, 1) for i in range(5))
            )

        assert asyncio.run(main()) == [1, 2, 3, 4, 5]


def test_instance_is_generic_at_run_time():
    alias = Instance[int]
    assert alias.__origin__ is Instance


def test_mypy_checks_submit_against_the_callable(tmp_path):
    mypy = pytest.importorskip("mypy.api")
    src = tmp_path / "user.py"
    src.write_text(
        textwrap.dedent("""
        from jobengine import Instance, Manager

        def add(a: int, b: int) -> int:
            return a + b

        with Manager(2) as mgr:
            f: Instance[int] = mgr.submit(add, 1, 2)
            total: int = f.result() + sum(mgr.map(add, [1], [2]))
            mgr.submit(add, "x")
    """)
    )
    cwd = os.getcwd()
    os.chdir(tmp_path)  # the installed package, as a user's project sees it
    try:
        out, err, _status = mypy.run(["--strict", "--no-incremental", str(src)])
    finally:
        os.chdir(cwd)
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert errors and all("user.py:10:" in line for line in errors), out + err
    assert any('"submit" of "Manager"' in line for line in errors), out
