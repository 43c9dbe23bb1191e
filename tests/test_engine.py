"""The engine end to end: workers, dispatch, observation, futures."""

import concurrent.futures as cf
import functools
import gc
import os
import pickle
import random
import threading
import time
import weakref
from datetime import datetime, timedelta, timezone

import jobs
import pytest

from jobengine import (
    DuplicateJobError,
    Instance,
    Job,
    LogLevel,
    Manager,
    ManagerStateError,
    Query,
    RemoteError,
    SerializationError,
    State,
    UnknownJobError,
)

HAPPY = [State.CREATED, State.SCHEDULED, State.PROCESSING, State.COMPLETED]


def states(mgr, ji):
    return [r.state for r in mgr.lookup_instance_history(ji)]


# -- executors of every shape ------------------------------------------------------------
def test_go_job_basic_usage(mgr):
    mgr.register_job(Job("sum", jobs.add))
    ji = mgr.schedule_registered_job("sum", args=(1, 2))
    assert ji.result(timeout=10) == 3
    assert states(mgr, ji) == HAPPY


@pytest.mark.parametrize(
    "fn, args, expected",
    [
        (lambda a, b: a * b, (6, 7), 42),
        (functools.partial(jobs.add, 10), (5,), 15),
        (jobs.Counter(100).plus, (1,), 101),
        (jobs.echo, ({"nested": [1, 2.5, None]},), {"nested": [1, 2.5, None]}),
    ],
    ids=["lambda", "partial", "bound-method", "picklable-args"],
)
def test_any_callable_runs(mgr, fn, args, expected):
    job = Job(f"k{id(fn)}", fn)
    assert mgr.schedule_job(job, args=args).result(timeout=10) == expected


def test_closure_runs(mgr):
    base = 40

    def closure(x):
        return base + x

    assert mgr.schedule_job(Job("closure", closure), args=(2,)).result(timeout=10) == 42


def test_large_arguments_and_results_travel_through_the_spill_path(mgr):
    n = 3 << 20  # larger than a ring record may be
    payload = os.urandom(n)
    assert mgr.submit(jobs.echo, payload).result(timeout=20) == payload
    assert len(mgr.submit(jobs.big, n).result(timeout=20)) == n
    assert not [f for f in os.listdir("/dev/shm") if f.startswith("jobengine-spill-")]


def test_jobs_run_in_worker_processes(mgr):
    pids = {
        f.result(timeout=10) for f in [mgr.submit(jobs.sleep_then, 0.05, None) for _ in range(2)]
    }
    worker_pids = {f.result(timeout=10) for f in [mgr.submit(jobs.pid) for _ in range(20)]}
    assert pids == {None}
    assert os.getpid() not in worker_pids
    assert worker_pids <= {w.pid for w in mgr.workers}


# -- failures --------------------------------------------------------------------------
def test_exception_is_a_failure_with_type_message_traceback(mgr):
    ji = mgr.schedule_job(Job("fails", jobs.fail), args=("bad thing",))
    exc = ji.exception(timeout=10)
    assert isinstance(exc, ValueError) and str(exc) == "bad thing"
    with pytest.raises(ValueError, match="bad thing"):
        ji.result()
    assert ji.state is State.TERMINATED
    history = mgr.lookup_instance_history(ji)
    assert [r.state for r in history] == [*HAPPY[:3], State.TERMINATED]
    assert history[-1].cause == "ValueError: bad thing"
    (line,) = [r for r in mgr.lookup_instance_logs(ji) if r.level is LogLevel.ERROR]
    assert "Traceback" in line.message and "ValueError: bad thing" in line.message
    assert "fail" in line.message  # the frame of the executor


def test_exception_that_cannot_be_rebuilt_arrives_as_remote_error(mgr):
    exc = mgr.submit(jobs.fail_custom).exception(timeout=10)
    assert isinstance(exc, RemoteError)
    assert exc.type_name == "CustomError" and "code 7" in exc.message
    assert "Traceback" in exc.traceback


def test_unpicklable_result_is_a_failure(mgr):
    exc = mgr.submit(jobs.unpicklable_result).exception(timeout=10)
    assert isinstance(exc, (SerializationError, RemoteError))
    assert "cannot be pickled" in str(exc)


def test_unpicklable_argument_is_refused_by_schedule_job_and_nothing_recorded(mgr):
    before = len(mgr.lookup_instances())
    with pytest.raises(SerializationError, match="cannot be pickled"):
        mgr.schedule_job(Job("echo-lock", jobs.echo), args=(threading.Lock(),))
    assert len(mgr.lookup_instances()) == before


def test_unpicklable_argument_fails_the_submitted_future_as_the_stdlib_does(mgr):
    # ProcessPoolExecutor pickles in the background and fails the Future; so do we,
    # and the instance is on record as TERMINATED with the cause.
    f = mgr.submit(jobs.echo, threading.Lock())
    exc = f.exception(timeout=10)
    assert isinstance(exc, SerializationError) and isinstance(exc, pickle.PicklingError)
    assert "cannot be pickled" in str(exc)
    assert states(mgr, f) == [State.CREATED, State.SCHEDULED, State.TERMINATED]
    assert "cannot be pickled" in mgr.lookup_instance_history(f)[-1].cause
    assert mgr.submit(jobs.echo, 5).result(timeout=10) == 5  # and the manager serves on


def test_retries_count_attempts_and_end_in_failure(mgr):
    seen = []
    job = Job(
        "flaky", jobs.fail, max_retries=2, error_handler=lambda ji, e: seen.append(ji.attempts)
    )
    ji = mgr.schedule_job(job)
    assert isinstance(ji.exception(timeout=10), ValueError)
    assert ji.attempts == 3 and seen == [1, 2, 3]
    assert states(mgr, ji) == [
        State.CREATED, State.SCHEDULED,
        State.PROCESSING, State.TERMINATED, State.SCHEDULED,
        State.PROCESSING, State.TERMINATED, State.SCHEDULED,
        State.PROCESSING, State.TERMINATED,
    ]  # fmt: skip
    attempts = [r.attempt for r in mgr.lookup_instance_history(ji) if r.state is State.TERMINATED]
    assert attempts == [1, 2, 3]


# -- observation -----------------------------------------------------------------------
def test_history_is_exact_ordered_and_names_the_worker(mgr):
    ji = mgr.submit(jobs.add, 2, 3)
    ji.result(timeout=10)
    history = mgr.lookup_instance_history(ji)
    assert [r.state for r in history] == HAPPY
    times = [r.time_ns for r in history]
    assert times == sorted(times)
    assert history[2].worker in {w.index for w in mgr.workers}
    assert history[2].attempt == history[3].attempt == 1
    assert ji.created_at <= ji.processed_at <= ji.completed_at
    assert all(isinstance(r.timestamp, datetime) for r in history)


def test_worker_side_instance_logs_land_in_history(mgr):
    ji = mgr.schedule_job(Job("logger", jobs.log_lines), args=(3,))
    assert ji.result(timeout=10) == 3
    logs = mgr.lookup_instance_logs(ji)
    assert [(r.level, r.message) for r in logs] == [
        (LogLevel.INFO, "line 0"), (LogLevel.INFO, "line 1"), (LogLevel.INFO, "line 2"),
        (LogLevel.WARN, "careful"),
    ]  # fmt: skip


def test_parameter_annotated_instance_gets_the_worker_instance(mgr):
    ji = mgr.schedule_job(Job("annotated", jobs.annotated), args=(5,))
    assert ji.result(timeout=10) == ji.uuid_str
    assert [r.message for r in mgr.lookup_instance_logs(ji)] == ["x=5"]


def test_manager_side_logs(mgr):
    ji = mgr.submit(jobs.noop)
    ji.result(timeout=10)
    ji.info("one")
    ji.error("two")
    assert [(r.level, r.message) for r in mgr.lookup_instance_logs(ji)] == [
        (LogLevel.INFO, "one"),
        (LogLevel.ERROR, "two"),
    ]


def test_handlers_run_in_the_manager_process(mgr):
    calls = []
    done = threading.Event()

    def on_state(ji, st):
        calls.append(("state", st, os.getpid()))
        if st.name in ("COMPLETED", "TERMINATED"):
            done.set()

    def on_result(ji, res):
        calls.append(("result", res, os.getpid()))

    job = Job("observed", jobs.add, response_handler=on_result, state_change_handler=on_state)
    assert mgr.schedule_job(job, args=(20, 22)).result(timeout=10) == 42
    assert done.wait(10)
    time.sleep(0.05)
    assert ("result", 42, os.getpid()) in calls
    assert [c[1] for c in calls if c[0] == "state"] == HAPPY
    assert {c[2] for c in calls} == {os.getpid()}


def test_lookup_instances_filters(mgr):
    t0 = datetime.now(timezone.utc)
    ok = [mgr.submit(jobs.add, i, i) for i in range(5)]
    bad = mgr.submit(jobs.fail)
    for f in ok:
        f.result(timeout=10)
    bad.exception(timeout=10)
    kind = ok[0].kind
    assert {i.uuid_str for i in mgr.lookup_instances(Query(kind=kind))} == {f.uuid_str for f in ok}
    assert [i.uuid_str for i in mgr.lookup_instances(Query(uuid=bad.uuid))] == [bad.uuid_str]
    assert [i.uuid_str for i in mgr.lookup_instances(Query(state=State.TERMINATED))] == [
        bad.uuid_str
    ]
    assert len(mgr.lookup_instances(Query(state=State.FINAL, after=t0))) == 6
    assert mgr.lookup_instances(Query(before=t0)) == []
    assert len(mgr.lookup_instances(Query(kind=kind, limit=2))) == 2
    # the current state, not "ever was": completed instances were PROCESSING once
    assert mgr.lookup_instances(Query(state=State.PROCESSING)) == []


def test_a_queued_instance_is_found_as_itself_while_only_the_engine_holds_it():
    m = Manager(1)  # not started: what is scheduled waits in the manager
    job = m.register_job(Job("held-by-engine", jobs.add))
    uuid = m.schedule_job(job, args=(1, 2)).uuid  # the caller keeps no reference
    [found] = m.lookup_instances(Query(uuid=uuid))
    assert isinstance(found, Instance) and found.state is State.SCHEDULED
    m.start()
    assert found.result(timeout=30) == 3
    m.stop()


def test_the_engine_lets_go_of_every_instance_it_is_done_with():
    # The lookup table holds what the engine holds by a plain reference; once the
    # engine is done with an instance only its caller keeps it alive, whichever way
    # it ended.
    m = Manager(1)
    job = m.register_job(Job("let-go", jobs.add))
    refs = {}
    canceled = m.schedule_job(job, args=(0, 0))  # in the inbox, never started
    assert canceled.cancel()
    refs["canceled in the inbox"] = weakref.ref(canceled)
    del canceled
    m.start()
    blocker = m.submit(jobs.slow_value, 0.3, 0)
    queued = m.submit(jobs.add, 1, 1)  # waits for the only worker: queued in the core
    assert queued.cancel()
    refs["canceled in the core"] = weakref.ref(queued)
    done = m.submit(jobs.add, 2, 2)
    failed = m.submit(jobs.fail)
    unpicklable = m.submit(jobs.echo, threading.Lock())
    many = m.submit_many(jobs.add, [3], [3])
    assert done.result(timeout=30) == 4 and many[0].result(timeout=30) == 6
    assert isinstance(failed.exception(timeout=30), ValueError)
    assert isinstance(unpicklable.exception(timeout=30), SerializationError)
    blocker.result(timeout=30)
    m.wait()
    for name, inst in [("done", done), ("failed", failed), ("unpicklable", unpicklable),
                       ("submit_many", many[0])]:  # fmt: skip
        refs[name] = weakref.ref(inst)
    del done, failed, unpicklable, many, inst, queued, blocker
    gc.collect()
    assert {name: ref() for name, ref in refs.items() if ref() is not None} == {}
    m.stop()


def test_the_lookup_table_forgets_instances_nobody_holds():
    # Thousands of finished instances dropped by their caller: once the table has
    # doubled, its walk forgets them, while the ones still held stay found as themselves.
    with Manager(2) as m:
        kept = [m.submit(jobs.add, i, 0) for i in range(50)]
        for _ in range(3):
            for f in [m.submit(jobs.add, 1, 1) for _ in range(3000)]:
                f.result(timeout=60)
        m.wait()
        gc.collect()
        m.submit(jobs.add, 0, 0).result(timeout=30)
        m._engine._prune_known()
        known = m._engine._known
        assert len(known) < 3000
        assert all(m._engine.lookup(f.uuid_str) is f for f in kept)
        assert [f.result() for f in kept] == list(range(50))


def test_the_lookup_table_never_keeps_an_instance_the_engine_runs_for_a_caller_who_left(
    tmp_path,
):
    # Every entry is borrowed from admission on (submit's compiled path, the Python
    # path of keyword arguments, submit_many, schedule_job): the engine's own lists
    # keep a queued or running instance alive, so one whose caller dropped it still
    # runs, is found by uuid until it ends, and leaves the table with its object.
    from jobengine import _core

    with Manager(1) as m:
        # the one worker is busy until the test opens the gate: the rest stay queued
        gate = m.submit(jobs.hold_until, str(tmp_path / "gate"))
        while gate.state is not State.PROCESSING:
            time.sleep(0.002)
        made = [m.submit(jobs.add, 1, 2), m.submit(jobs.add, a=1, b=2)]
        made += m.submit_many(jobs.add, [1, 3], [2, 4])
        made.append(m.schedule_job(Job("walk", jobs.add), args=(5, 6)))
        uuids = [inst.uuid_str for inst in made]
        refs = [weakref.ref(inst) for inst in made]
        known = m._engine._known
        assert all(type(known[u]) is _core.Borrowed for u in uuids)
        del made
        gc.collect()
        # queued: held by the engine, found as its Instance (a record if it were gone)
        found = {str(x.uuid): x for x in m.lookup_instances() if str(x.uuid) in uuids}
        assert len(found) == 5
        assert all(isinstance(x, Instance) and x.state is State.SCHEDULED for x in found.values())
        del found
        (tmp_path / "gate").write_text("go")
        m.wait()
        gc.collect()
        assert all(r() is None for r in refs)  # done and dropped: gone, and so is its entry
        assert not any(u in known for u in uuids)
        assert [r.state for r in map(m.store.get_instance, uuids)] == [State.COMPLETED] * 5


# -- priority and dispatch ---------------------------------------------------------------
def test_priority_order_holds_when_the_only_worker_is_busy(tmp_path):
    out = tmp_path / "order"
    with Manager(num_workers=1) as m:
        blocker = m.submit(jobs.sleep_then, 0.5)
        while blocker.state is not State.PROCESSING:
            time.sleep(0.005)
        rng = random.Random(3)
        prios = [rng.randrange(-50, 50) for _ in range(60)]
        job = Job("ordered", jobs.append_line)
        for i, p in enumerate(prios):
            m.schedule_job(job, args=(str(out), f"{p} {i}"), priority=p)
    ran = [tuple(map(int, line.split())) for line in out.read_text().splitlines()]
    assert len(ran) == 60
    # higher first; FIFO among equal priorities
    assert ran == sorted(ran, key=lambda pi: (-pi[0], pi[1]))


def test_schedule_after_and_at_wait_in_the_timer_heap(mgr):
    t = time.monotonic()
    a = mgr.submit(jobs.noop)
    later = mgr.schedule_job(Job("later", jobs.noop), schedule_after=0.3)
    at = mgr.schedule_job(Job("at", jobs.noop), schedule_at=datetime.now() + timedelta(seconds=0.2))
    past = mgr.schedule_job(Job("past", jobs.noop), schedule_at=datetime.now() - timedelta(hours=1))
    a.result(timeout=10)
    past.result(timeout=10)
    assert not later.done()
    at.result(timeout=10)
    assert time.monotonic() - t >= 0.2
    later.result(timeout=10)
    assert later.processed_at - later.created_at >= timedelta(seconds=0.29)
    assert at.processed_at >= at.scheduled_at - timedelta(milliseconds=2)


def test_resize_up_and_down_while_jobs_run_loses_nothing_runs_nothing_twice(tmp_path):
    out = tmp_path / "runs"
    with Manager(num_workers=1) as m:
        job = Job("resized", jobs.append_after)
        futures = [m.schedule_job(job, args=(str(out), str(i), 0.01)) for i in range(150)]
        time.sleep(0.1)
        m.resize_workers(4)
        deadline = time.monotonic() + 10
        while len([w for w in m.workers if w.pid]) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(m.workers) == 4
        time.sleep(0.2)
        m.resize_workers(1)
        for f in futures:
            f.result(timeout=30)
        deadline = time.monotonic() + 10
        while len(m.workers) > 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(m.workers) == 1 and m.num_workers == 1
    lines = out.read_text().split()
    assert sorted(lines, key=int) == [str(i) for i in range(150)]  # each exactly once


def test_workers_report_pid_state_current_rss_cpu(mgr):
    ji = mgr.submit(jobs.sleep_then, 0.5)
    while ji.state is not State.PROCESSING:
        time.sleep(0.005)
    infos = mgr.workers
    busy = [w for w in infos if w.state == "busy"]
    assert len(infos) == 2 and len(busy) == 1
    assert busy[0].current == ji.uuid_str
    assert all(w.pid and w.rss and w.rss > 1 << 20 for w in infos)
    assert all(w.cpu_percent is not None for w in infos)
    ji.result(timeout=10)


def test_no_process_forks_while_it_has_threads(mgr):
    forks_here = []
    os.register_at_fork(before=lambda: forks_here.append(threading.active_count()))
    m = Manager(num_workers=3).start()
    try:
        m.submit(jobs.noop).result(timeout=10)
        m.resize_workers(4)
        deadline = time.monotonic() + 10
        while len(m._engine.pool.fork_thread_counts) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        m.stop()
    assert forks_here == []  # the manager's process (threaded) never forks
    assert m._engine.pool is not None
    assert len(m._engine.pool.fork_thread_counts) >= 4
    assert set(m._engine.pool.fork_thread_counts) == {1}  # the supervisor, at every fork


def test_killed_worker_is_replaced_and_its_job_fails_with_worker_crashed(mgr):
    ji = mgr.submit(jobs.sleep_then, 30)
    while ji.state is not State.PROCESSING:
        time.sleep(0.005)
    victim = next(w for w in mgr.workers if w.current == ji.uuid_str)
    os.kill(victim.pid, 9)
    exc = ji.exception(timeout=10)
    assert type(exc).__name__ == "WorkerCrashed" and exc.signal == 9
    assert "signal 9" in mgr.lookup_instance_history(ji)[-1].cause
    assert mgr.submit(jobs.add, 1, 1).result(timeout=10) == 2
    deadline = time.monotonic() + 10
    while len([w for w in mgr.workers if w.pid]) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert victim.pid not in {w.pid for w in mgr.workers} and len(mgr.workers) == 2
    events = mgr.worker_events
    (death,) = [e for e in events if e.kind == "died"]
    assert (death.pid, death.signal, death.cause) == (victim.pid, 9, "signal 9")
    born = [e for e in events if e.kind == "born"]
    assert len(born) == 3 and born[-1].index == victim.index and born[-1].time_ns > death.time_ns


# -- futures and the Executor API -------------------------------------------------------
def test_instances_are_futures(mgr):
    fs = [mgr.submit(jobs.sleep_then, 0.01 * i, i) for i in range(6)]
    done, not_done = cf.wait(fs, timeout=10)
    assert not not_done and {f.result() for f in done} == set(range(6))
    assert sorted(
        f.result() for f in cf.as_completed([mgr.submit(jobs.add, i, 0) for i in range(5)])
    ) == list(range(5))
    got = []
    f = mgr.submit(jobs.add, 1, 2)
    f.add_done_callback(lambda fut: got.append(fut.result()))
    f.result(timeout=10)
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    assert got == [3]
    assert isinstance(f, Instance) and isinstance(f, cf.Future) and f.done() and not f.running()


def test_wait_first_completed_and_callbacks_on_many_unwatched_futures(mgr):
    fs = [mgr.submit(jobs.noop) for _ in range(500)]
    slow = mgr.submit(jobs.sleep_then, 0.3, "slow")
    done, _ = cf.wait([slow, fs[-1]], return_when=cf.FIRST_COMPLETED, timeout=10)
    assert fs[-1] in done
    assert slow.result(timeout=10) == "slow"
    assert all(f.result(timeout=10) is None for f in fs)


def test_cancel_a_queued_instance(tmp_path):
    with Manager(num_workers=1) as m:
        blocker = m.submit(jobs.sleep_then, 0.3)
        queued = m.schedule_job(Job("victim", jobs.append_line), args=(str(tmp_path / "x"), "ran"))
        other = m.submit(jobs.add, 1, 1)
        assert queued.cancel() and queued.cancelled()
        assert queued.state is State.CANCELED
        with pytest.raises(cf.CancelledError):
            queued.result(timeout=1)
        assert other.result(timeout=10) == 2 and blocker.result(timeout=10) is None
        assert [r.state for r in m.lookup_instance_history(queued)] == [
            State.CREATED, State.SCHEDULED, State.CANCELED,
        ]  # fmt: skip
        assert not blocker.cancel()  # finished: nothing to cancel
    assert not (tmp_path / "x").exists()


def test_cancel_instances_touches_only_matching(mgr):
    job_a = Job("a-delayed", jobs.noop)
    job_b = Job("b-delayed", jobs.noop)
    a = [mgr.schedule_job(job_a, schedule_after=5) for _ in range(3)]
    b = [mgr.schedule_job(job_b, schedule_after=0.2) for _ in range(2)]
    canceled = mgr.cancel_instances(Query(kind="a-delayed"))
    assert {c.uuid_str for c in canceled} == {i.uuid_str for i in a}
    assert all(i.cancelled() for i in a)
    assert all(i.result(timeout=10) is None for i in b)


def test_executor_api_runs_process_pool_code_unchanged():
    def work(executor):
        futures = [executor.submit(jobs.cpu, 10_000 + i) for i in range(8)]
        total = sum(f.result() for f in cf.as_completed(futures))
        squares = list(executor.map(jobs.add, range(10), range(10)))
        chunked = list(executor.map(jobs.add, range(100), range(100), chunksize=7))
        return total, squares, chunked

    with cf.ProcessPoolExecutor(max_workers=2) as pool:
        expected = work(pool)
    with Manager(num_workers=2) as m:
        assert work(m) == expected


def test_map_timeout_and_errors_propagate(mgr):
    with pytest.raises(ValueError):
        list(mgr.map(jobs.fail, ["x", "y"]))
    with pytest.raises(cf.TimeoutError):
        list(mgr.map(jobs.sleep_then, [2.0], timeout=0.1))


# -- lifecycle and registry ------------------------------------------------------------
def test_schedule_before_start_runs_after_start():
    m = Manager(num_workers=1)
    ji = m.schedule_job(Job("early", jobs.add), args=(1, 1))
    assert ji.state is State.SCHEDULED
    with m:
        assert ji.result(timeout=10) == 2


def test_stop_with_wait_finishes_everything_then_refuses_new_work():
    m = Manager(num_workers=2).start()
    fs = [m.submit(jobs.sleep_then, 0.02, i) for i in range(20)]
    m.stop_with_wait()
    assert [f.result(timeout=0) for f in fs] == list(range(20))
    with pytest.raises(ManagerStateError):  # the go-job verbs
        m.schedule_job(Job("after-stop", jobs.noop))
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        m.submit(jobs.noop)  # exactly what Executor.submit raises after shutdown


def test_stop_cancels_queued_and_lets_running_finish():
    m = Manager(num_workers=1).start()
    running = m.submit(jobs.sleep_then, 0.3, "done")
    while running.state is not State.PROCESSING:
        time.sleep(0.005)
    queued = [m.submit(jobs.noop) for _ in range(5)]
    m.stop()
    assert running.result(timeout=0) == "done"
    assert all(q.cancelled() for q in queued)


def test_wait_returns_when_idle_and_times_out_otherwise(mgr):
    assert mgr.wait(timeout=5)
    mgr.submit(jobs.sleep_then, 0.5)
    assert not mgr.wait(timeout=0.05)
    assert mgr.wait(timeout=10)


def test_registry_verbs():
    m = Manager(num_workers=1)
    job = m.register_job(Job("reg", jobs.add, description="adds"))
    with pytest.raises(DuplicateJobError) as e:
        m.register_job(Job("reg", jobs.add))
    assert isinstance(e.value, ValueError)
    assert m.lookup_job("reg") is job and m.list_jobs() == [job]
    assert m.unregister_job("reg") is job
    with pytest.raises(UnknownJobError, match="reg"):
        m.lookup_job("reg")
    with pytest.raises(UnknownJobError):
        m.schedule_registered_job("reg")
    m.stop()


def test_clear_history_and_logs_by_time(mgr):
    ji = mgr.schedule_job(Job("clr", jobs.log_lines), args=(2,))
    ji.result(timeout=10)
    mid = datetime.now(timezone.utc)
    time.sleep(0.01)
    ji.info("after")
    assert mgr.clear_instance_logs(after=mid) == 1
    assert [r.message for r in mgr.lookup_instance_logs(ji)] == ["line 0", "line 1", "careful"]
    assert mgr.clear_instance_history(before=mid) == 4
    assert mgr.lookup_instance_history(ji) == []


def test_uuids_are_v7_and_increase(mgr):
    fs = [mgr.submit(jobs.noop) for _ in range(50)]
    assert all(f.uuid.version == 7 for f in fs)
    assert [f.uuid for f in fs] == sorted(f.uuid for f in fs)
    assert len({f.uuid for f in fs}) == 50
