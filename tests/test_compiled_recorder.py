"""The recorder's compiled steps (_core.take_all, _core.snapshots) and the SQL stores'
(_core.group_history) against what they replace: the deque drain, the Python loop that
made each batch's instance rows, and the one that grouped its state records into
history rows."""

import gc
import threading
from collections import deque

import jobs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobengine import Job, Manager, State, _core


def _reference_snapshots(touched, outcomes):
    # Recorder.flush's loop before it was compiled
    instances = []
    seen = set()
    for i in reversed(touched):  # the latest snapshot of each
        uuid = i.uuid_str
        if uuid in seen:
            continue
        seen.add(uuid)
        instances.append(
            (uuid, i.job.kind, i.state._value_, i.priority, i.attempts, i.created_ns,
             i.scheduled_ns, i.processed_ns, i.completed_ns, outcomes.pop(uuid, None))
        )  # fmt: skip
    instances.reverse()
    return instances


STATES = [State.SCHEDULED, State.PROCESSING, State.COMPLETED, State.TERMINATED]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 4), st.sampled_from(STATES), st.integers(0, 3)), max_size=25),
    st.sets(st.integers(0, 4)),
)
def test_snapshots_are_the_reference_rows(touches, with_outcome):
    m = Manager(1)
    job = Job("snap", jobs.noop)
    insts = [m._new_instance(job, (), {}, None, None, None, False, False)[0] for _ in range(5)]
    touched, expected_touched = [], []
    for index, state, attempts in touches:
        inst = insts[index]
        inst.state, inst.attempts = state, attempts
        # a touch records the instance; its fields at flush time are what counts
        touched.append(inst)
        expected_touched.append(inst)
    outcomes = {insts[i].uuid_str: ("r", b"%d" % i) for i in with_outcome}
    expected_outcomes = dict(outcomes)
    got = _core.snapshots(touched, outcomes)
    want = _reference_snapshots(expected_touched, expected_outcomes)
    assert got == want
    assert outcomes == expected_outcomes  # the same outcomes popped, the rest kept
    # rows of strings, ints and outcome tuples: nothing for the collector to walk
    assert not any(gc.is_tracked(row) for row in got)


def test_take_all_empties_the_deque_in_order():
    q = deque(range(10))
    assert _core.take_all(q) == list(range(10))
    assert not q and _core.take_all(q) == []


def test_take_all_loses_nothing_another_thread_appends():
    q = deque()
    n = 200_000
    done = threading.Event()

    def produce():
        for i in range(n):
            q.append(i)
        done.set()

    t = threading.Thread(target=produce)
    t.start()
    taken = []
    while not done.is_set() or q:
        taken.extend(_core.take_all(q))
    t.join()
    assert taken == list(range(n))


def _reference_group_history(states):
    # stores/sql.py group_history before it was compiled
    groups = {}
    for r in states:
        g = groups.get(r[0])
        if g is None:
            groups[r[0]] = [r[1], [r[2:]]]
        else:
            g[1].append(r[2:])
    return [(u, k, orjson.dumps(recs).decode(), recs[0][1], recs[-1][1])
            for u, (k, recs) in groups.items()]  # fmt: skip


# what a state record's fields can hold, and then some: ints of every size orjson
# takes, text needing escapes (quotes, control characters, non-ASCII), bools, floats
FIELD = st.one_of(
    st.none(),
    st.integers(-(2**63), 2**64 - 1),
    st.text(max_size=6),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from(["k", "k2", "é"]),
                          FIELD, FIELD, FIELD, FIELD, FIELD, FIELD), max_size=20))  # fmt: skip
def test_group_history_is_the_reference(states):
    assert _core.group_history(states, orjson.dumps) == _reference_group_history(states)


def test_group_history_rejects_what_the_reference_does():
    with pytest.raises(orjson.JSONEncodeError):  # past 64 bits
        _core.group_history([("a", "k", 1, 2**64, 0, None, None, None)], orjson.dumps)
    with pytest.raises(IndexError):  # no time to order it by
        _core.group_history([("a", "k", 1)], orjson.dumps)
    assert _core.group_history([], orjson.dumps) == []
