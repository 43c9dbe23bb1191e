"""The worker's attempt: the compiled common case (_core.worker_attempt) against the
reference path it stands for (Worker._attempt), event for event, in this process: a
Worker over a real channel, its events read from the manager's end."""

import gc
import os
import pickle
import threading
import weakref

import pytest

from jobengine._core import worker_attempt
from jobengine.errors import SerializationError, TaskLoadError
from jobengine.pool.channel import (
    E_ERR,
    E_OK,
    E_STARTED,
    FLAG_LARGE,
    TAG_MASK,
    Channel,
    new_doorbell,
    read_payload,
)
from jobengine.pool.worker import Worker

PACKED = 7 | 3 << 32  # handle 7, attempt 3


def _worker():
    """A Worker over a fresh channel, without what Worker() installs in a worker
    process (its signal handler, the logging bridge); and the manager's end."""
    _fd, _mm, bell = new_doorbell()
    manager = Channel.create("attempt-test", bell)
    w = Worker.__new__(Worker)
    w.index = 0
    w.channel = Channel(manager.fd, bell, "worker")
    w.parent_pid = os.getppid()
    w.executors = {}
    w.mm = w.channel.mm
    w.current = 0
    w.current_job = ("", None)
    w.interrupted = False
    w.jobs = 0
    return w, manager


def _events(w, manager):
    w.channel.events.publish()  # (the OK is written unpublished: Worker.run publishes)
    out = []
    for tag, a, b, payload in manager.events.read_many(1000):
        assert b > 0  # a wall-clock stamp
        out.append((tag & TAG_MASK, a, bool(tag & FLAG_LARGE), read_payload(tag, payload)))
    return out


def _run(path, fn, payload, inject=None):
    w, manager = _worker()
    if path == "compiled":
        worker_attempt(w, w.channel.events, PACKED, fn, inject, "kind", payload)
    else:
        w._attempt(PACKED, fn, inject, "kind", None, payload)  # noqa: SLF001 - the reference
    return w, _events(w, manager)


def _outcome(events):
    """The events with an error's payload decoded to (exception type, message)."""
    out = []
    for tag, a, large, payload in events:
        if tag == E_ERR:
            _raw, type_name, message, _tb = pickle.loads(payload)
            out.append((tag, a, large, type_name, message))
        elif tag == E_OK:
            out.append((tag, a, large, pickle.loads(payload)))
        else:
            out.append((tag, a, large, payload))
    return out


class Unpicklable:
    def __reduce__(self):
        raise TypeError("not this one")


class Exits:
    def __reduce__(self):
        raise SystemExit(4)


def add(a, b=0):
    return a + b


def fails(x):
    raise ValueError(f"bad {x}")


def closure_result():
    y = 5
    return lambda: y  # plain pickle cannot carry it; cloudpickle can


CASES = {
    "positional": (add, ((2, 3), {})),
    "keywords": (add, ((2,), {"b": 5})),
    "raises": (fails, ((1,), {})),
    "exits": (lambda: (_ for _ in ()).throw(SystemExit(2)), ((), {})),
    "unpicklable result": (lambda: threading.Lock(), ((), {})),
    "result that raises SystemExit as it is pickled": (lambda: Exits(), ((), {})),
    "result pickle refuses, cloudpickle takes": (closure_result, ((), {})),
    "large result": (lambda: b"x" * (600 << 10), ((), {})),
    "a list for the arguments": (add, ([1, 2], {})),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_compiled_attempt_reports_what_the_reference_reports(case):
    fn, decoded = CASES[case]
    payload = pickle.dumps(decoded, protocol=5)
    _, compiled = _run("compiled", fn, payload)
    _, reference = _run("reference", fn, payload)
    assert compiled[0][0] == E_STARTED
    got, want = _outcome(compiled), _outcome(reference)
    if case == "result pickle refuses, cloudpickle takes":
        assert [e[:3] for e in got] == [e[:3] for e in want]
        assert got[1][3]() == want[1][3]() == 5
        return
    assert got == want


def test_each_case_ends_as_the_job_would():
    def outcome(case):
        fn, decoded = CASES[case]
        return _outcome(_run("compiled", fn, pickle.dumps(decoded, protocol=5))[1])[-1]

    assert outcome("positional")[::3] == (E_OK, 5)
    assert outcome("keywords")[::3] == (E_OK, 7)
    assert outcome("raises")[3:] == ("ValueError", "bad 1")
    assert outcome("exits")[3] == "SystemExit"
    assert outcome("unpicklable result")[3] == SerializationError.__qualname__
    assert outcome("result that raises SystemExit as it is pickled")[3] == "SystemExit"
    large = outcome("large result")
    assert large[0] == E_OK and large[2] is True and large[3] == b"x" * (600 << 10)
    assert outcome("a list for the arguments")[::3] == (E_OK, 3)


def test_arguments_that_do_not_unpickle_fail_the_attempt_with_a_load_error():
    payload = b"\x80\x05cnomodule_xyz\nthing\n."  # a global from a module that is gone
    for path in ("compiled", "reference"):
        _, events = _run(path, add, payload)
        tags = [e[0] for e in events]
        assert tags == [E_STARTED, E_ERR]
        _raw, type_name, message, _tb = pickle.loads(events[1][3])
        assert type_name == TaskLoadError.__qualname__
        assert "the arguments of job 'kind' cannot be loaded" in message


def test_an_instance_to_hand_over_takes_the_reference_path():
    seen = []

    def wants_instance(x, instance):
        seen.append((x, instance.uuid, instance.attempt))
        return x

    payload = pickle.dumps(((9,), {}, "the-uuid"), protocol=5)
    _, events = _run("compiled", wants_instance, payload, inject=(("instance", 1, "instance"),))
    assert _outcome(events)[-1][::3] == (E_OK, 9)
    assert seen == [(9, "the-uuid", 3)]


def test_current_names_the_attempt_during_the_call_only():
    w, _manager = _worker()
    during = []
    worker_attempt(w, w.channel.events, PACKED, lambda: during.append(w.current), None, "k",
                   pickle.dumps(((), {}), protocol=5))  # fmt: skip
    assert during == [PACKED] and w.current == 0
    worker_attempt(w, w.channel.events, PACKED, fails, None, "k", pickle.dumps(((1,), {})))
    assert w.current == 0


class Arg:
    pass


class Probe:
    """A result that, as it is pickled, notes whether the job's argument is gone."""

    seen: list = []

    def __init__(self, ref):
        self.ref = ref

    def __reduce__(self):
        gc.collect()
        Probe.seen.append(self.ref() is None)
        return (int, (0,))


@pytest.mark.parametrize("path", ["compiled", "reference"])
def test_the_arguments_are_not_kept_while_the_result_is_pickled(path):
    Probe.seen = []
    payload = pickle.dumps(((Arg(),), {}), protocol=5)
    _, events = _run(path, lambda a: Probe(weakref.ref(a)), payload)
    assert _outcome(events)[-1][::3] == (E_OK, 0)
    assert Probe.seen == [True]


def test_a_full_event_ring_makes_the_attempt_wait_for_the_manager():
    w, manager = _worker()
    events = w.channel.events
    while events.write(99, 0, 0, b"f" * 4000):  # fill it
        pass
    events.publish()
    drained = []  # (tag, payload) of every record the manager's end read meanwhile
    done = threading.Event()

    def drain_later():
        threading.Event().wait(0.2)  # the attempt finds the ring full, and waits
        while not done.is_set():
            drained.extend((t & TAG_MASK, p) for t, _a, _b, p in manager.events.read_many(1000))
            threading.Event().wait(0.005)

    t = threading.Thread(target=drain_later)
    t.start()
    worker_attempt(w, events, PACKED, add, None, "k", pickle.dumps(((1, 2), {})))
    done.set()
    t.join()
    events.publish()  # (the OK is written unpublished: Worker.run publishes it)
    got = drained + [(t & TAG_MASK, p) for t, _a, _b, p in manager.events.read_many(100000)]
    assert sum(tag == 99 for tag, _ in got) > 0  # the filler went first
    assert [tag for tag, _ in got if tag != 99] == [E_STARTED, E_OK]
    assert pickle.loads(got[-1][1]) == 3
