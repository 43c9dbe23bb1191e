"""The recorder's state records live in a compiled buffer (_core.RecordBuffer, issue 14)
until the store writes them: the memory store reads them in place, every other store
gets STATE_ROW tuples.  Held here to a plain list of tuples, to its reference counts,
to appends from many threads while another takes, and to what each kind of store sees."""

import pickle
import sys
import threading

import jobs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobengine import Job, Manager, State
from jobengine._core import RecordBuffer
from jobengine.stores.memory import MemoryStore
from jobengine.stores.sqlite import SQLiteStore

RECORD = st.tuples(
    st.sampled_from(["a", "b", "c"]),  # uuid
    st.sampled_from(["k1", "k2"]),  # kind
    st.integers(0, 200),  # state
    st.integers(0, 2**62),  # time
    st.integers(0, 9),  # attempt
    st.none() | st.integers(0, 3),  # worker
    st.integers(1, 2**40),  # run
    st.none() | st.text(max_size=5),  # cause
)
OPS = st.one_of(
    st.tuples(st.just("append"), RECORD),
    st.tuples(st.just("created"), RECORD),
    st.tuples(st.just("take"), st.integers(-1, 6)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(OPS, max_size=40))
def test_the_buffer_is_a_list_of_state_rows(ops):
    buf, model = RecordBuffer(), []
    taken, taken_model = [], []
    for op, arg in ops:
        if op == "append":
            buf.append(*arg)
            model.append(arg)
        elif op == "created":
            uuid, kind, _s, t, _a, _w, run, _c = arg
            buf.created(uuid, kind, t, run)
            model += [
                (uuid, kind, 1, t, 0, None, run, None),
                (uuid, kind, 2, t, 0, None, run, None),
            ]
        else:
            part = buf.take(arg)
            n = len(model) if arg < 0 else min(arg, len(model))
            taken.append(part.tuples())
            taken_model.append(model[:n])
            model = model[n:]
        assert len(buf) == len(model) and buf.tuples() == model
    assert taken == taken_model
    assert (State.CREATED._value_, State.SCHEDULED._value_) == (1, 2)  # what created() writes


def test_it_holds_its_objects_until_it_goes_and_take_moves_them():
    uuid, cause = "".join(["u", "1"]), "".join(["c", "x"])  # fresh objects
    time = 1_796_000_000_000_000_000 + len(uuid)
    before = [sys.getrefcount(o) for o in (uuid, cause, time)]
    buf = RecordBuffer()
    buf.append(uuid, "k", 3, time, 1, None, 1, cause)
    assert [sys.getrefcount(o) for o in (uuid, cause, time)] == [b + 1 for b in before]
    part = buf.take()  # moved, not copied
    assert [sys.getrefcount(o) for o in (uuid, cause, time)] == [b + 1 for b in before]
    assert len(buf) == 0 and part.tuples()[0][0] is uuid
    del part
    assert [sys.getrefcount(o) for o in (uuid, cause, time)] == before


def test_a_record_that_cannot_be_kept_is_refused_whole():
    buf = RecordBuffer()
    buf.append("u", "k", 3, 5, 1, None, 1, None)
    for bad in (("u", "k", "3", 5, 1, None, 1, None), ("u", "k", 3, 5, 1.5, None, 1, None),
                ("u", "k", 3, 5, 1, None, 2**70, None)):  # fmt: skip
        with pytest.raises((TypeError, OverflowError)):
            buf.append(*bad)
    with pytest.raises(TypeError):
        buf.append("u", "k", 3)
    assert buf.tuples() == [("u", "k", 3, 5, 1, None, 1, None)]
    with pytest.raises(TypeError):
        pickle.dumps(buf)


def test_appends_from_many_threads_while_another_takes_lose_nothing():
    buf = RecordBuffer()
    n, writers = 20_000, 4
    seen: list = []
    done = threading.Event()

    def write(w):
        for i in range(n):
            buf.append(f"{w}-{i}", "k", 2, i, 0, None, 1, None)

    def take():
        while not done.is_set():
            seen.extend(r[0] for r in buf.take(97).tuples())
        seen.extend(r[0] for r in buf.take().tuples())

    taker = threading.Thread(target=take)
    taker.start()
    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    taker.join()
    assert len(seen) == n * writers and len(set(seen)) == n * writers
    for w in range(writers):  # each thread's records in the order it wrote them
        mine = [int(u.split("-")[1]) for u in seen if u.startswith(f"{w}-")]
        assert mine == sorted(mine)


class _TupleStore(MemoryStore):
    """A MemoryStore whose write_batch is its own: it must get STATE_ROW tuples."""

    def __init__(self):
        super().__init__()
        self.kinds = set()

    def write_batch(self, instances, states, logs, token=None):
        self.kinds.add(type(states))
        assert all(type(r) is tuple and len(r) == 8 for r in states)
        super().write_batch(instances, states, logs, token)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("store", ["memory", "subclass", "sqlite"])
def test_every_store_gets_the_history_it_got_before(store, tmp_path):
    s = {"memory": MemoryStore, "subclass": _TupleStore}.get(store)
    s = s() if s else SQLiteStore(str(tmp_path / "db.sqlite"))
    with Manager(num_workers=2, store=s) as m:
        job = m.register_job(Job("buffered", jobs.add))
        insts = [m.schedule_job(job, args=(i, 1)) for i in range(200)]
        assert [i.result(timeout=30) for i in insts] == [i + 1 for i in range(200)]
        for inst in insts[::37]:
            history = m.lookup_instance_history(inst)
            assert [(r.state, r.attempt, r.run) for r in history] == [
                (State.CREATED, 0, 1), (State.SCHEDULED, 0, 1),
                (State.PROCESSING, 1, 1), (State.COMPLETED, 1, 1),
            ]  # fmt: skip
            assert history[0].time_ns == history[1].time_ns == inst.created_ns
            assert history[2].worker in (0, 1) and history[3].time_ns == inst.completed_ns
    if store == "subclass":
        assert s.kinds == {list}
