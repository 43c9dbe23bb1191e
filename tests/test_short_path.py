"""submit() and schedule_job() of a job without schedule options, due now, take a short
path: the compiled one (_core.ShortPath) in its common case, else Manager._admit_plain;
what either records and returns is what the general path records and returns for the
same call."""

import functools
import pickle
import time

import jobs
import pytest
from conftest import wait_for
from hypothesis import given, settings
from hypothesis import strategies as st

import jobengine.manager as manager_module
from jobengine import Job, Manager, Query, SerializationError, State, _core
from jobengine.records import StateRecord

HAPPY = [State.CREATED, State.SCHEDULED, State.PROCESSING, State.COMPLETED]


class _SpiedShortPath:
    """A _core.ShortPath that notes each call it served: (kind, raising, "compiled")."""

    def __init__(self, real, taken):
        self.real, self.taken = real, taken

    def submit(self, fn, args, kwargs):
        inst = self.real.submit(fn, args, kwargs)
        if inst is not None:
            self.taken.append((inst.job.kind, False, "compiled"))
        return inst

    def schedule(self, job, args, kwargs):
        inst = self.real.schedule(job, args, kwargs)
        if inst is not None:
            self.taken.append((job.kind, True, "compiled"))
        return inst


@pytest.fixture
def spied(monkeypatch):
    """The calls either short path served, in order: (kind, raising, which)."""
    taken = []
    original = Manager._admit_plain

    def spy(self, job, args, kwargs, *, raising):
        taken.append((job.kind, raising, "python"))
        return original(self, job, args, kwargs, raising=raising)

    monkeypatch.setattr(Manager, "_admit_plain", spy)
    monkeypatch.setattr(
        manager_module, "ShortPath", lambda *a: _SpiedShortPath(_core.ShortPath(*a), taken)
    )
    return taken


def _shape(m: Manager, inst) -> dict:
    """What a caller can observe of a finished instance, minus its identity."""
    return _observed(m, inst, inst.result(timeout=30))  # settled once its records are written


def _observed(m: Manager, inst, result) -> dict:
    history: list[StateRecord] = m.lookup_instance_history(inst)
    return {
        "result": result,
        "states": [r.state for r in history],
        "attempts": [r.attempt for r in history],
        "created_is_scheduled": inst.scheduled_ns == inst.created_ns,
        "priority": inst.priority,
        "args": inst.args,
        "kwargs": inst.kwargs,
        "final": inst.state,
    }


def test_which_calls_take_the_short_path(spied, tmp_path):
    m = Manager(1)
    job = Job("add", jobs.add, priority=2)
    m.register_job(job)
    early = m.schedule_registered_job("add", args=(1, 1))  # before start: it waits
    assert spied == []
    with m:
        assert early.result(timeout=30) == 2
        m.submit(jobs.add, 1, 2).result(timeout=30)
        m.schedule_registered_job("add", args=(3, 4)).result(timeout=30)
        assert [raising for _, raising, _ in spied] == [False, True]  # submit, then go-job
        assert spied[1][0] == "add"
        spied.clear()
        m.submit(functools.partial(jobs.add, 1), 2).result(timeout=30)  # transient job
        m.schedule_registered_job("add", args=(1, 2), priority=5).result(timeout=30)
        m.schedule_registered_job("add", args=(1, 2), schedule_after=0.01).result(timeout=30)
        m.schedule_registered_job("add", args=[1, 2]).result(timeout=30)  # a list, not a tuple
        m.schedule_job(job, args=(1, 2), max_retries=2).result(timeout=30)  # an override
        assert spied == []


def test_the_short_path_records_what_the_general_path_records(spied):
    with Manager(1) as m:
        m.register_job(Job("add", jobs.add, priority=3))
        short = m.schedule_registered_job("add", args=(1, 2), kwargs={})
        general = m.schedule_registered_job("add", args=(1, 2), kwargs={}, priority=3)
        assert len(spied) == 1  # only the first took it
        assert _shape(m, short) == _shape(m, general)
        assert _shape(m, short)["states"] == HAPPY

        spied.clear()
        short = m.submit(jobs.add, 5, b=6)
        general = m.submit(functools.partial(jobs.add), 5, b=6)  # transient: general
        assert len(spied) == 1
        assert _shape(m, short) == _shape(m, general)
        assert m.lookup_instances(Query(uuid=short.uuid_str)) == [short]  # the same object


def test_arguments_that_cannot_travel_follow_each_api_s_rule(spied):
    import threading

    with Manager(1) as m:
        job = m.register_job(Job("echo", jobs.echo))
        with pytest.raises(SerializationError):
            m.schedule_registered_job("echo", args=(threading.Lock(),))
        assert all(i.kind != "echo" for i in m.lookup_instances())  # go-job: nothing
        f = m.submit(jobs.echo, threading.Lock())  # Executor: the Future fails
        assert isinstance(f.exception(timeout=30), SerializationError)
        assert [k for k, _, _ in spied] == [job.kind, f.job.kind]
        assert f.state != State.COMPLETED
        wait_for(lambda: m.lookup_instance_history(f)[-1].state == f.state)


def test_a_call_without_arguments_is_pickled_once_not_per_instance():
    """NO_ARGUMENTS is every such instance's payload (~0.5 us a job saved); a call
    whose executor takes its Instance, or one with any argument, is pickled for itself."""
    import pickle

    from jobengine.job import NO_ARGUMENTS, task_bytes

    assert pickle.loads(NO_ARGUMENTS) == ((), {})
    plain, injected = Job("noop", jobs.noop), Job("stamp", jobs.stamp_run)
    assert task_bytes(plain, (), {}, "u") is NO_ARGUMENTS
    assert task_bytes(plain, (), None, "u") is NO_ARGUMENTS
    assert pickle.loads(task_bytes(injected, (), {}, "u1")) == ((), {}, "u1")
    assert pickle.loads(task_bytes(plain, (1,), {}, "u")) == ((1,), {})
    assert pickle.loads(task_bytes(plain, (), {"a": 1}, "u")) == ((), {"a": 1})
    with Manager(1) as m:  # and end to end: each gets what it was given
        m.register_job(Job("stamp", jobs.stamp_run, max_retries=0))
        assert m.submit(jobs.noop).result(timeout=30) is None
        assert m.schedule_registered_job("stamp").result(timeout=30) == 1
        assert m.submit(jobs.add, 2, b=3).result(timeout=30) == 5


_SIMPLE = st.one_of(
    st.integers(),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.floats(allow_nan=False),
    st.none(),
    st.booleans(),
    st.sampled_from(["?", "__main__"]),  # a placeholder; bytes that look by-value
    st.lists(st.integers(), max_size=3),
)


def test_the_compiled_path_pickles_arguments_as_task_bytes_does(spied):
    # The compiled path pickles plain positional arguments itself; a "?" placeholder,
    # or anything whose pickle names __main__, goes to task_bytes: the payload is the
    # same bytes either way.
    from jobengine.job import task_bytes

    with Manager(1) as m:
        m.submit(jobs.echo_all).result(timeout=30)  # the job exists: compiled from now
        made = []

        @settings(max_examples=150, deadline=None)
        @given(st.lists(_SIMPLE, max_size=4))
        def check(args):
            spied.clear()
            inst = m.submit(jobs.echo_all, *args)
            assert spied == [(inst.job.kind, False, "compiled")]
            assert inst.payload == task_bytes(inst.job, tuple(args), {}, inst.uuid_str)
            made.append((inst, args))

        check()
        for inst, args in made[-20:]:
            # a "?" is the worker's Instance: echo_all gives back its uuid there
            want = [inst.uuid_str if a == "?" else a for a in args]
            assert inst.result(timeout=30) == want


def test_the_compiled_path_serves_repeated_calls_as_the_python_path_would(spied):
    with Manager(1) as m:
        m.submit(jobs.add, 1, 2).result(timeout=30)  # first: the job is made (python)
        m.register_job(Job("adder", jobs.add, priority=4))
        spied.clear()
        compiled = [
            m.submit(jobs.add, 5, 6),
            m.submit(jobs.add, 7, 8),
            m.schedule_registered_job("adder", args=(5, 6)),
            m.schedule_job(m.lookup_job("adder"), args=(5, 6), kwargs={}),
        ]
        assert spied == [
            ("add", False, "compiled"),
            ("add", False, "compiled"),
            ("adder", True, "compiled"),
            ("adder", True, "compiled"),
        ]
        # keyword arguments need Signature.bind: the Python path
        assert m.submit(jobs.add, 5, b=6).result(timeout=30) == 11
        assert spied[-1] == ("add", False, "python")
        spied.clear()
        # the Python short path for the same calls, for comparison
        m._short = None
        python = [
            m.submit(jobs.add, 5, 6),
            m.submit(jobs.add, 7, 8),
            m.schedule_registered_job("adder", args=(5, 6)),
            m.schedule_job(m.lookup_job("adder"), args=(5, 6), kwargs={}),
        ]
        assert [w for _, _, w in spied] == ["python"] * 4
        for a, b in zip(compiled, python, strict=True):
            assert type(a) is type(b)
            assert _shape(m, a) == _shape(m, b)
            assert a.handle == b.handle == -1 and a.worker is not None
            assert m.lookup_instances(Query(uuid=a.uuid_str)) == [a]  # the same object
        assert [c.priority for c in compiled] == [0, 0, 4, 4]


def test_the_compiled_path_leaves_other_cases_to_the_python_path(spied):
    from jobengine.recorder import FLUSH_EVERY

    calls = []
    watched = Job("watched", jobs.noop, state_change_handler=lambda i, s: calls.append(s))
    with Manager(1) as m:
        m.register_job(watched)
        m.register_job(Job("typed", jobs.typed_add))
        m.submit(jobs.noop).result(timeout=30)
        spied.clear()
        # a state-change handler: its CREATED and SCHEDULED calls are queued by Recorder
        m.schedule_registered_job("watched").result(timeout=30)
        wait_for(lambda: len(calls) == 4)
        assert calls[:2] == [State.CREATED, State.SCHEDULED]
        # go-job converts arguments by the executor's annotations
        assert m.schedule_registered_job("typed", args=("2", "3")).result(timeout=30) == 5
        # the recorder at its flush mark: Recorder.created flushes (and may wait)
        m._engine.recorder._unflushed = FLUSH_EVERY
        assert m.submit(jobs.noop).result(timeout=30) is None
        assert [w for _, _, w in spied] == ["python"] * 3
        spied.clear()
        assert m.submit(jobs.noop).result(timeout=30) is None  # flushed: compiled again
        assert [w for _, _, w in spied] == ["compiled"]


class _Unhashable:
    __hash__ = None  # type: ignore[assignment]

    def __eq__(self, other):
        return self is other

    def __call__(self, x):
        return x + 1


def test_an_unhashable_callable_and_an_argument_that_cannot_travel_take_the_general_path(
    spied,
):
    import threading

    with Manager(1) as m:
        fn = _Unhashable()
        assert [m.submit(fn, i).result(timeout=30) for i in range(3)] == [1, 2, 3]
        m.submit(jobs.echo, 1).result(timeout=30)
        spied.clear()
        f = m.submit(jobs.echo, threading.Lock())  # pickled by the compiled path, refused
        assert isinstance(f.exception(timeout=30), SerializationError)
        assert [w for _, _, w in spied] == ["python"]  # which pickled it again, and failed it
        assert m.submit(jobs.echo, 7).result(timeout=30) == 7
        assert [w for _, _, w in spied] == ["python", "compiled"]


def test_a_restarted_manager_gets_a_compiled_path_for_its_new_engine(spied):
    m = Manager(1)
    m.start()
    m.submit(jobs.add, 1, 1).result(timeout=30)
    first = m._short
    m.stop()
    assert m._short is first  # (kept, and declines: its engine has stopped)
    with pytest.raises(RuntimeError):
        m.submit(jobs.add, 1, 1)
    m.start()
    try:
        assert m._short is not first
        spied.clear()
        assert m.submit(jobs.add, 2, 2).result(timeout=30) == 4
        assert [w for _, _, w in spied] == ["compiled"]
    finally:
        m.stop()


def test_a_queued_instance_from_the_compiled_path_is_in_the_store_as_scheduled(spied):
    # its instance row is written with its first two records, before anything runs it
    with Manager(1) as m:
        m.submit(jobs.add, 0, 0).result(timeout=30)
        hold = m.submit(jobs.sleep_then, 0.5)
        spied.clear()
        queued = m.submit(jobs.add, 1, 2)
        assert [w for _, _, w in spied] == ["compiled"]
        assert m.lookup_instance_history(queued)  # (flushed)
        record = m.store.get_instance(queued.uuid_str)
        assert record.state == State.SCHEDULED and not queued.done()
        assert record.created_ns == record.scheduled_ns == queued.created_ns
        assert (record.kind, record.priority, record.attempts) == ("add", 0, 0)
        assert queued.result(timeout=30) == 3 and hold.result(timeout=30) is None


def test_schedule_job_registers_again_a_job_that_was_unregistered(spied):
    # registry.adopt: the go-job rule holds on the compiled path too
    with Manager(1) as m:
        job = m.register_job(Job("again", jobs.add))
        assert m.schedule_job(job, args=(1, 2)).result(timeout=30) == 3  # its executor pickled
        m.unregister_job("again")
        spied.clear()
        assert m.schedule_job(job, args=(2, 2)).result(timeout=30) == 4
        assert m.lookup_job("again") is job
        assert [w for _, _, w in spied] == ["python"]


def test_a_job_submitted_to_an_idle_engine_is_dealt_by_the_compiled_path(monkeypatch, spied):
    # the idle case of Engine._deal_here, compiled with it (_core.ShortPath): the Python
    # method is left for the other cases, e.g. recycled workers (Dispatcher._send
    # counts their tasks)
    from jobengine.engine import Engine

    calls = []
    original = Engine._deal_here

    def deal_here(self):
        calls.append(self)
        return original(self)

    monkeypatch.setattr(Engine, "_deal_here", deal_here)
    for recycled in (False, True):
        calls.clear()
        with Manager(2, max_jobs_per_worker=3 if recycled else None) as m:
            m.submit(jobs.add, 0, 0).result(timeout=30)
            spied.clear()
            n_calls = len(calls)
            engine = m._engine
            for i in range(8):
                assert m.wait(timeout=30)  # idle again, and its turn over
                wait_for(lambda e=engine: not (e._finished or e.inbox or len(e.core)))
                f = m.submit(jobs.add, i, 1)
                assert f.result(timeout=30) == i + 1
                assert [r.state for r in m.lookup_instance_history(f)] == HAPPY
            assert [w for _, _, w in spied] == ["compiled"] * 8
            assert len(calls) - n_calls == (8 if recycled else 0)


def test_threads_racing_through_the_compiled_path_lose_nothing(spied):
    # four threads submit at once, now to an idle engine, now to a busy one: the idle
    # deal (the turn lock) and the general path's engine thread take turns
    import random
    import threading

    with Manager(2) as m:
        m.submit(jobs.add, 0, 0).result(timeout=30)
        spied.clear()
        out: list = []
        errors: list = []

        def submitter(seed):
            rnd = random.Random(seed)
            try:
                for i in range(300):
                    f = m.submit(jobs.add, seed, i)
                    out.append((f, seed + i))
                    if rnd.random() < 0.05:
                        f.result(timeout=30)
                        time.sleep(rnd.random() * 0.003)  # let the engine go idle
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=submitter, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert [f.result(timeout=60) for f, _ in out] == [want for _, want in out]
        assert m.wait(timeout=30)
        assert len(spied) == 1200 and {w for _, _, w in spied} == {"compiled"}
        assert len({f.uuid_str for f, _ in out}) == 1200
        for f, _ in out[::37]:
            assert [r.state for r in m.lookup_instance_history(f)] == HAPPY
        assert m._engine._active == 0


def _outcome_shape(m: Manager, inst) -> dict:
    """_shape for an instance that may have failed: its error's type and text instead."""
    try:
        result, error = inst.result(timeout=30), None
    except Exception as e:
        result, error = None, (type(e).__name__, str(e))
    return {**_observed(m, inst, result), "error": error, "kind": inst.kind}


_VALUES = st.one_of(
    st.integers(-5, 5), st.text(max_size=3), st.lists(st.integers(0, 3), max_size=2)
)
_DIGITS = st.text("0123", min_size=1, max_size=2)
_CALLS = st.one_of(
    st.tuples(st.just("submit add"), _VALUES, _VALUES),
    st.tuples(st.just("submit add b="), st.integers(), st.integers()),
    st.tuples(st.just("submit echo"), _VALUES, st.none()),
    st.tuples(st.just("submit noop"), st.none(), st.none()),
    st.tuples(st.just("submit fail"), st.text(max_size=5), st.none()),
    st.tuples(st.just("submit typed_add"), _DIGITS, st.integers(0, 9)),
    st.tuples(st.just("registered adder"), st.integers(), st.integers()),
    st.tuples(st.just("registered typed"), _DIGITS, st.integers(0, 9)),
    st.tuples(st.just("registered watched"), st.none(), st.none()),
    st.tuples(st.just("schedule_job adder b="), st.integers(), st.integers()),
    st.tuples(st.just("schedule_job adder"), st.integers(), st.integers()),
)


def _call(m: Manager, what: str, x, y):
    if what == "submit add":
        return m.submit(jobs.add, x, y)
    if what == "submit add b=":
        return m.submit(jobs.add, x, b=y)
    if what == "submit echo":
        return m.submit(jobs.echo, x)
    if what == "submit noop":
        return m.submit(jobs.noop)
    if what == "submit fail":
        return m.submit(jobs.fail, x)
    if what == "submit typed_add":  # the Executor rule: no conversion
        return m.submit(jobs.typed_add, x, y)
    if what == "registered adder":
        return m.schedule_registered_job("adder", args=(x, y))
    if what == "registered typed":  # the go-job rule: converted by its annotations
        return m.schedule_registered_job("typed", args=(x, str(y)))
    if what == "registered watched":
        return m.schedule_registered_job("watched")
    if what == "schedule_job adder b=":
        return m.schedule_job(m.lookup_job("adder"), args=(x,), kwargs={"b": y})
    return m.schedule_job(m.lookup_job("adder"), args=(x, y))


@pytest.fixture(scope="module")
def compiled_and_python():
    """Two managers alike but for the compiled short path: the second has none."""
    managers = []
    for compiled in (True, False):
        m = Manager(2)
        m.register_job(Job("adder", jobs.add, priority=3))
        m.register_job(Job("typed", jobs.typed_add))
        m.register_job(Job("watched", jobs.noop, state_change_handler=lambda i, s: None))
        m.start()
        if not compiled:
            m._short = None
        managers.append(m)
    yield managers
    for m in managers:
        m.stop()


@settings(max_examples=30, deadline=None)
@given(calls=st.lists(_CALLS, min_size=1, max_size=6), wait_between=st.booleans())
def test_the_compiled_path_and_the_python_path_are_alike_for_any_calls(
    compiled_and_python, calls, wait_between
):
    # whatever mix of calls a caller makes, on an idle or a busy engine, each manager
    # gives the same results, errors, records and histories
    shapes = []
    for m in compiled_and_python:
        made = []
        for what, x, y in calls:
            made.append(_call(m, what, x, y))
            if wait_between:
                made[-1].exception(timeout=30)  # (the next call meets an idle engine)
        shapes.append([_outcome_shape(m, inst) for inst in made])
    assert shapes[0] == shapes[1]
    assert compiled_and_python[1]._short is None


def test_a_manager_dropped_without_stop_is_freed_at_once_after_the_compiled_path():
    # ShortPath keeps the engine, not the Manager: no cycle, so the Manager goes (and
    # its finalizer stops the engine and its processes) without waiting for the collector
    import gc
    import weakref

    import psutil

    before = {c.pid for c in psutil.Process().children()}
    gc.disable()
    try:
        m = Manager(1)
        m.submit(jobs.add, 1, 1).result(timeout=30)
        assert m.submit(jobs.add, 2, 2).result(timeout=30) == 4
        assert m._short is not None
        ref = weakref.ref(m)
        del m
        assert ref() is None
    finally:
        gc.enable()
    wait_for(lambda: not ({c.pid for c in psutil.Process().children()} - before), timeout=15)


_SHARED = "shared"  # one object, passed twice or more: pickle's memo fetches it again
_BOUNDS = [0, 255, 256, 65535, 65536, -1, -(2**31), 2**31 - 1, 2**31, -(2**31) - 1, 2**63]
_ARG = st.one_of(
    st.integers(),
    st.sampled_from(_BOUNDS),
    st.floats(),  # (nan, infinities and -0.0 too)
    st.text(max_size=300),  # (past 255 bytes of UTF-8: pickle's way)
    st.sampled_from([_SHARED, "\ud800", "é", "__main__", "?"]),  # a lone surrogate too
    st.none(),
    st.booleans(),
    st.binary(max_size=4),  # not covered: pickle's way
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_ARG, max_size=70))
def test_plain_arguments_are_written_as_pickle_writes_them(args):
    # the compiled submit writes the pickle of (args, {}) itself for the arguments most
    # calls pass; anything else (None) goes to pickle.dumps
    got = _core.plain_args_pickle(tuple(args))
    want = pickle.dumps((tuple(args), {}), protocol=5)
    if got is not None:
        assert got == want
    # (1 KiB: the most it writes itself, as a caller's thread may have a small stack)
    covered = (
        0 < len(args) <= 64
        and len(want) <= 1024
        and all(
            a is None
            or type(a) in (bool, float)
            or (type(a) is int and -(2**31) <= a < 2**31)
            or (type(a) is str and a != "\ud800" and len(a.encode()) < 256)
            for a in args
        )
    )
    assert (got is not None) == covered
