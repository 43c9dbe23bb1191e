"""The compiled event drain (_core.EventDrain) against the engine's Python reference
path (Engine._one_event): any sequence of worker records, handled by each on a fresh
engine, leaves the same records, metrics, instance states, settlements and worker
bookkeeping.  The fast path handles a job's two common events itself and must hand
everything else (errors, undecodable results, stale or unknown events, handlers, a
pending cancel, illegal moves) to the reference, in order."""

from __future__ import annotations

import pickle

import jobs
from hypothesis import given, settings
from hypothesis import strategies as st

from jobengine import Job, Manager, State, _core
from jobengine.clock import SystemClock
from jobengine.engine import SETTLE_RESULTS, Engine
from jobengine.metrics import BUCKETS_NS, FINAL_NAMES, EngineStats
from jobengine.pool.channel import E_ERR, E_LOG, E_OK, E_STARTED
from jobengine.pool.pool import WorkerSlot
from jobengine.pool.worker import encode_error
from jobengine.scheduler import Dispatcher


def _handler(*_args):
    pass


JOBS = [
    Job("plain", jobs.noop),
    Job("watched", jobs.noop, state_change_handler=_handler),
    Job("answered", jobs.noop, response_handler=_handler),
    Job("retried", jobs.noop, max_retries=1),
]


class _FixedClock(SystemClock):
    """The system clock's rules (not virtual), stopped: times the engine reads itself
    (a failure's) are then the same on both paths."""

    def time_ns(self) -> int:
        return 5_000

    def monotonic_ns(self) -> int:
        return 0


class _Pool:  # what the reference path asks of the pool here: kill() on a cancel, and
    # its workers (the dispatcher's nap is per worker)
    def __init__(self):
        self.kills = []
        self.workers = {}

    def kill(self, w, reason, target):
        self.kills.append((reason, target))


def _payload(kind: str, handle: int) -> bytes:
    if kind == "ok":
        return pickle.dumps(("result", handle))
    if kind == "badok":
        return b"not a pickle"
    if kind == "err":
        return encode_error(ValueError(f"failed {handle}"))
    if kind == "log":
        return bytes([30]) + f"line {handle}".encode()
    return b""


TAGS = {"started": E_STARTED, "ok": E_OK, "badok": E_OK, "err": E_ERR, "log": E_LOG}


class _FlakyStats(EngineStats):
    """Metrics that fail for one kind: handling that kind's start raises (a stand-in
    for anything unexpected), which must fail that instance only, on both paths."""

    def started(self, kind, wait_ns):
        if kind == "plain":
            raise RuntimeError("metrics broke")
        super().started(kind, wait_ns)


def _run(setup: list[tuple[int, bool]], events: list[tuple[str, int, int]], fast: bool,
         flaky: bool = False):  # fmt: skip
    m = Manager(1)
    engine: Engine = m._engine
    # The stock EngineStats is counted inside the compiled drain; a subclass (the
    # flaky one) is called: both must match the reference path.
    engine.recorder.stats = _FlakyStats() if flaky else EngineStats()
    engine.clock = _FixedClock()
    engine.pool = _Pool()
    engine.dispatcher = Dispatcher(engine.pool, engine.registry, None)
    w = WorkerSlot(0, None)
    insts = []
    for handle, (job_index, cancel) in enumerate(setup):
        inst = m._new_instance(JOBS[job_index], (), {}, None, None, None, False, False)[0]
        inst.state, inst.handle, inst.attempts, inst.worker = State.SCHEDULED, handle, 1, 0
        inst.scheduled_ns = 1_000
        inst.cancel_requested = cancel
        w.inflight[handle] = inst
        insts.append(inst)
    rec = engine.recorder
    rec._records.take()  # (emptied)
    rec._touched.clear()
    # times 100 us apart from the due time: waits and run times land on bucket bounds
    records = [(TAGS[kind], handle | attempt << 32, 1_000 + i * 100_000, _payload(kind, handle))
               for i, (kind, handle, attempt) in enumerate(events)]  # fmt: skip
    if fast:
        drain = _core.EventDrain(rec, engine.dispatcher, engine._finished, lambda: 0,
                                 pickle.loads, State.PROCESSING, State.COMPLETED,
                                 State.SCHEDULED, SETTLE_RESULTS, EngineStats, BUCKETS_NS,
                                 FINAL_NAMES[State.COMPLETED])  # fmt: skip
        drain.drain(w, records, engine._one_event, engine._event_failed)
    else:
        for record in records:
            engine._one_event(w, record)

    index = {inst.uuid_str: i for i, inst in enumerate(insts)}
    ids = {id(inst): i for i, inst in enumerate(insts)}

    def settle(fn, args):
        owner = ids.get(id(getattr(fn, "__self__", None)), getattr(fn, "__name__", None))

        def show(a):
            if id(a) in ids:
                return ("instance", ids[id(a)])
            if isinstance(a, BaseException):
                return type(a).__name__, str(a)
            return repr(a)

        return fn.__name__, owner, [show(a) for a in args]

    stats = rec.stats
    d = engine.dispatcher
    kills, engine.pool = engine.pool.kills, None  # (an unstarted manager's, for its exit)
    return {
        "states": [(index[s[0]], *s[1:]) for s in rec._records.tuples()],
        "touched": [ids[id(i)] for i in rec._touched],
        "outcomes": {index[u]: o for u, o in rec._outcomes.items()},
        "logs": [(index[r[0]], *r[1:]) for r in rec._logs],
        "deferred": [settle(fn, a) for fn, args in rec._deferred for fn, a in _each(fn, args)],
        "executed": dict(stats.executed),
        "finals": dict(stats.finals),
        "run": {k: (h.counts, h.total_ns) for k, h in stats.run.items()},
        "wait": {k: (h.counts, h.total_ns) for k, h in stats.wait.items()},
        "instances": [
            (i.state, i.processed_ns, i.completed_ns, i.attempts, i.worker) for i in insts
        ],
        "worker": (w.jobs, ids.get(id(w.running)), sorted(w.inflight)),
        "finished": [ids[id(i)] for i in engine._finished],
        "dispatcher": (d.avg_ns, d.seen, d.credits, d.nap_ns),
        "kills": kills,
    }


def _each(fn, args):
    """A deferred call as per-instance settlements: the drain's batch of completed
    instances (SETTLE_RESULTS) is what the reference path defers one by one."""
    if fn is SETTLE_RESULTS:
        units, results = args
        return [(u.set_result, (r,)) for u, r in zip(units, results, strict=True)]
    return [(fn, args)]


setups = st.lists(st.tuples(st.integers(0, len(JOBS) - 1), st.booleans()), min_size=1,
                  max_size=6)  # fmt: skip


LIVES = [  # what a worker reports about one attempt, in order (plus oddities)
    ["started", "ok"],
    ["started", "ok"],
    ["started", "err"],
    ["started", "badok"],
    ["started", "log", "ok"],
    ["started"],
    [],
    ["ok"],
    ["started", "started", "ok"],
    ["started", "ok", "ok"],
]


@st.composite
def scenarios(draw):
    """Instances, and the records a worker sends about them: each instance's in its
    order, interleaved at random, with some for unknown handles or stale attempts."""
    setup = draw(setups)
    n = len(setup)
    lives = [list(draw(st.sampled_from(LIVES))) for _ in range(n)]
    slots = [h for h, life in enumerate(lives) for _ in life]
    order = draw(st.permutations(slots))
    events = [(lives[h].pop(0), h, 1) for h in order]
    noise = st.tuples(st.sampled_from(sorted(TAGS)), st.integers(0, n), st.sampled_from([1, 2]))
    for at, odd in draw(st.lists(st.tuples(st.integers(0, len(events)), noise), max_size=3)):
        events.insert(at, odd)
    return setup, events, draw(st.booleans())


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_the_compiled_drain_does_what_the_reference_path_does(scenario):
    setup, events, flaky = scenario
    assert _run(setup, events, True, flaky) == _run(setup, events, False, flaky)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from([0, 2]), min_size=17, max_size=40), st.randoms(), st.booleans())
def test_long_runs_of_mixed_kinds_count_as_the_reference_path_does(kinds, rnd, flaky):
    # The drain counts metrics and the dispatcher's average in C and adds them up when
    # the kind changes, before a handover and at the end: enough jobs here for the
    # dispatcher's every-16th recompute, and kinds changing at random places.
    setup = [(k, False) for k in kinds]
    events = []
    for h in range(len(setup)):
        events += [("started", h, 1), ("ok", h, 1)]
    if rnd.random() < 0.5:  # a handover in the middle (an error record)
        events.insert(rnd.randrange(len(events)), ("err", len(setup), 1))
    assert _run(setup, events, True, flaky) == _run(setup, events, False, flaky)


def test_a_plain_job_s_two_events_are_handled_without_the_reference_path():
    # the common case must really take the compiled path (else it is only a detour)
    m = Manager(1)
    engine = m._engine
    engine.dispatcher = Dispatcher(_Pool(), engine.registry, None)
    w = WorkerSlot(0, None)
    inst = m._new_instance(JOBS[0], (), {}, None, None, None, False, False)[0]
    inst.state, inst.handle, inst.attempts, inst.worker = State.SCHEDULED, 0, 1, 0
    w.inflight[0] = inst
    slow = []
    states = State.PROCESSING, State.COMPLETED, State.SCHEDULED
    drain = _core.EventDrain(engine.recorder, engine.dispatcher, engine._finished, lambda: 7,
                             pickle.loads, *states, SETTLE_RESULTS)  # fmt: skip
    drain.drain(w, [(E_STARTED, 1 << 32, 100, b""), (E_OK, 1 << 32, 250, pickle.dumps(42))],
                lambda *a: slow.append(a), lambda *a: slow.append(a))  # fmt: skip
    assert slow == []
    assert inst.state is State.COMPLETED and (inst.processed_ns, inst.completed_ns) == (100, 250)
    assert inst.started_mono == 7 and w.jobs == 1 and not w.inflight and w.running is None
    assert engine._finished == [inst]
    assert not inst.done()  # settled once its records are written
    engine.recorder.run_deferred()
    assert inst.result(timeout=0) == 42


def test_a_run_of_results_settles_each_future_as_set_result_would(caplog):
    m = Manager(1)
    made = [m._new_instance(JOBS[0], (), {}, None, None, None, False, False)[0] for _ in range(4)]
    watched, _plain, settled, _last = made
    seen = []
    watched.add_done_callback(lambda f: seen.append(f.result()))  # makes its Condition
    settled.set_result("first")  # a second set_result raises: logged, the rest go on
    SETTLE_RESULTS(made, ["w", "p", "again", "l"])
    assert seen == ["w"]
    assert [f.result(timeout=0) for f in made] == ["w", "p", "first", "l"]
    assert "settling an instance failed" in caplog.text


def test_a_report_whose_handling_raises_fails_only_its_instance():
    setup = [(0, False), (3, False)]  # a plain job (its metrics raise), then another
    events = [("started", 0, 1), ("started", 1, 1), ("ok", 0, 1), ("ok", 1, 1)]
    for fast in (True, False):
        out = _run(setup, events, fast, flaky=True)
        assert [i[0] for i in out["instances"]] == [State.TERMINATED, State.COMPLETED]
        failed = [d for d in out["deferred"] if d[:2] == ("set_exception", 0)]
        assert failed and failed[0][2][0][0] == "JobHandlingError"
        assert "metrics broke" in failed[0][2][0][1]
