"""Instance's per-job fields are C members of _core.InstanceFields (issue 14): to Python
they must behave as the plain attributes they replaced, and the compiled calls that
read them must see what Python code wrote."""

from __future__ import annotations

import copy
import gc
import pickle
import sys
import weakref
from concurrent.futures import Future

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from jobengine import Job, Manager, Query, State
from jobengine._core import (
    InstanceFields,
    known_get,
    lend,
    prune_known,
    release_units,
    settle_results,
    snapshots,
)
from jobengine.instance import Instance, Run

GETSETS = [
    name
    for name, value in vars(InstanceFields).items()
    if type(value).__name__ == "getset_descriptor" and name not in ("__dict__", "__weakref__")
]
PROPERTIES = ["kind", "uuid_str"]  # read-only, compiled
MEMBERS = [name for name in GETSETS if name not in PROPERTIES]


def noop():
    return None


def make(uid=7, args=(1, 2), kwargs=None, priority=3, created_ns=123) -> Instance:
    return Instance(None, Job("fields", noop), uid, args, kwargs or {}, priority, created_ns)


def test_the_members_are_the_fields_every_instance_has():
    assert sorted(MEMBERS) == sorted([
        "_state", "_result", "_exception", "_owner", "job", "_uuid_str", "args", "_kwargs",
        "priority", "state", "payload", "created_ns", "scheduled_ns", "handle", "attempts",
        "worker", "processed_ns", "started_mono", "completed_ns",
    ])  # fmt: skip


def test_no_class_attribute_hides_a_member():
    # A class attribute of the same name in a class before InstanceFields in the MRO
    # would be found first: reads would see it, writes would go to the attribute array
    # and the compiled calls would never see them.
    for cls in Instance.__mro__[: Instance.__mro__.index(InstanceFields)]:
        hidden = sorted(set(GETSETS) & set(vars(cls)))
        assert not hidden, f"{cls.__name__} hides {hidden}"


def test_uuid_str_and_kind_are_read_only_properties():
    inst = make()
    assert (inst.uuid_str, inst.kind) == ("00000000-0000-0000-0000-000000000007", "fields")
    assert set(PROPERTIES) <= set(GETSETS)
    for name in PROPERTIES:
        with pytest.raises(AttributeError):
            setattr(inst, name, "x")


def test_a_new_instance_starts_as_before():
    inst = make()
    assert isinstance(inst, Future)
    assert inst.uuid_str == "00000000-0000-0000-0000-000000000007"
    assert inst.state is State.CREATED
    assert (inst.args, inst.kwargs, inst.priority, inst.created_ns) == ((1, 2), {}, 3, 123)
    assert (inst.handle, inst.attempts, inst.started_mono, inst.payload) == (-1, 0, 0, b"")
    for name in ("scheduled_ns", "processed_ns", "completed_ns", "worker"):
        assert getattr(inst, name) is None, name
    assert not inst.done() and not inst.running()
    assert make(uid="abc").uuid_str == "abc"  # a text uid is kept as it is


def test_python_writes_are_what_the_compiled_row_reads():
    inst = make()
    inst.state = State.PROCESSING
    inst.attempts, inst.worker = 2, 1
    inst.scheduled_ns, inst.processed_ns, inst.completed_ns = 200, 300, 400
    outcomes = {inst.uuid_str: ("r", b"x")}
    row = snapshots([inst], outcomes)
    assert row == [(inst.uuid_str, "fields", int(State.PROCESSING), 3, 2, 123, 200, 300, 400,
                    ("r", b"x"))]  # fmt: skip
    assert outcomes == {}


def test_compiled_settling_is_seen_by_the_future_api():
    a, b = make(uid=1), make(uid=2)
    seen = []
    b.add_done_callback(lambda f: seen.append(f.result()))  # b has a Condition: set_result
    settle_results("PENDING", "FINISHED", None, [a, b], ["ra", "rb"])
    assert (a.result(), b.result(), seen) == ("ra", "rb", ["rb"])
    assert a.done() and a.exception() is None


def test_an_instance_in_a_cycle_is_collected():
    inst = make()
    inst.args = (inst,)  # a cycle through a C member: the collector must see it
    ref = weakref.ref(inst)
    del inst
    gc.collect()
    assert ref() is None


def test_copy_and_pickle_keep_every_field():
    inst = make()
    inst.attempts, inst.completed_ns = 4, 999
    inst.timeout_sent = True  # a rarely set field, in the attribute array
    for clone in (copy.copy(inst), pickle.loads(pickle.dumps(inst))):
        assert type(clone) is Instance
        assert (clone.uuid_str, clone.attempts, clone.completed_ns) == (inst.uuid_str, 4, 999)
        assert clone.timeout_sent is True and clone.state is State.CREATED


def test_created_and_scheduled_times_are_kept_unboxed():
    # Every queued instance has both; held as int objects they cost ~40 bytes each
    # instance (bench/PROFILE.md).  To Python they read and write as the ints they were.
    inst = make(created_ns=None)
    assert inst.created_ns is None and inst.scheduled_ns is None
    big = 1_796_000_000_123_456_789 + len("x")  # a fresh int object, not a cached one
    refs = sys.getrefcount(big)
    inst.created_ns = inst.scheduled_ns = big
    assert sys.getrefcount(big) == refs  # the instance holds its value, not the object
    assert inst.created_ns == big and inst.scheduled_ns == big
    for value in (0, -1, 2**63 - 1, -(2**63) + 1):
        inst.scheduled_ns = value
        assert inst.scheduled_ns == value
    inst.scheduled_ns = None
    assert inst.scheduled_ns is None
    with pytest.raises(TypeError):
        inst.scheduled_ns = 1.5
    for out_of_range in (2**63, -(2**63)):  # (the least int64 is the None marker)
        with pytest.raises(OverflowError):
            inst.created_ns = out_of_range
    assert inst.created_ns == big  # a refused write leaves the field as it was
    row = snapshots([inst], {})[0]
    assert (row[5], row[6]) == (big, None)


def test_a_run_has_no_members_and_takes_the_reference_path():
    assert not issubclass(Run, InstanceFields)


@pytest.mark.timeout(60)
def test_jobs_through_the_engine_fill_the_members():
    with Manager(num_workers=2) as m:
        fs = [m.submit(pow, 2, i) for i in range(300)]
        assert [f.result() for f in fs] == [2**i for i in range(300)]
        for f in fs:
            assert f.state is State.COMPLETED and f.attempts == 1 and f.worker in (0, 1)
            assert f.created_ns <= f.scheduled_ns <= f.processed_ns <= f.completed_ns
            assert f.handle == -1
        history = [r.state for r in fs[-1].history()]
        assert history == [State.CREATED, State.SCHEDULED, State.PROCESSING, State.COMPLETED]


# -- the lookup table's borrowed entries --------------------------------------------------
class Owner:  # what an Instance's finalizer reads of its engine: the lookup table
    def __init__(self):
        self._known: dict = {}


def test_a_lent_entry_leaves_the_table_with_its_instance():
    from jobengine._core import Borrowed, known_get, lend

    owner = Owner()
    inst = Instance(owner, Job("fields", noop), 9, (), {}, 0, 0)
    uuid = inst.uuid_str
    lend(owner._known, inst)
    assert type(owner._known[uuid]) is Borrowed and known_get(owner._known, uuid) is inst
    other = Instance(owner, Job("fields", noop), 10, (), {}, 0, 0)
    lend(owner._known, other)
    del inst
    assert uuid not in owner._known and known_get(owner._known, uuid) is None
    assert known_get(owner._known, other.uuid_str) is other


def test_an_entry_replaced_under_its_uuid_is_not_removed_by_the_old_instance():
    from jobengine._core import known_get, lend

    owner = Owner()
    old = Instance(owner, Job("fields", noop), 12, (), {}, 0, 0)
    new = Instance(owner, Job("fields", noop), 12, (), {}, 0, 0)  # the same uuid
    lend(owner._known, old)
    lend(owner._known, new)
    del old  # its finalizer finds another object's entry: it leaves it
    assert known_get(owner._known, new.uuid_str) is new


def test_an_instance_in_a_cycle_leaves_the_table_when_collected():
    from jobengine._core import lend

    owner = Owner()
    inst = Instance(owner, Job("fields", noop), 11, (), {}, 0, 0)
    inst.set_result(1)
    box = [inst]
    inst.add_done_callback(lambda f, box=box: box)  # a callback that holds it: a cycle
    lend(owner._known, inst)
    ref = weakref.ref(inst)
    del inst, box
    gc.collect()
    assert ref() is None and owner._known == {}


def _cycle_through(member):
    # an Instance that refers to itself through `member` only
    box: list = []
    fn = (lambda: box) if member == "job" else noop  # "job": its callable closes over box
    inst = Instance(None, Job("cycle", fn), 21, (), {}, 0, 0)
    box.append(inst)
    if member == "result":
        inst.set_result(box)
    elif member == "exception":
        inst.set_exception(ValueError(box))
    elif member == "args":
        inst.args = (box,)
    elif member == "kwargs":
        inst._kwargs = {"x": box}
    elif member == "payload":  # (an exception rides here a moment when pickling fails)
        inst.payload = ValueError(box)
    elif member == "owner":
        owner = Owner()
        owner._known = box
        inst._owner = owner
    return inst


@pytest.mark.parametrize(
    "member", ["result", "exception", "args", "kwargs", "payload", "owner", "job"]
)
def test_the_collector_frees_a_cycle_through_any_member_that_can_hold_one(member):
    inst = _cycle_through(member)
    ref = weakref.ref(inst)
    del inst
    gc.collect()
    assert ref() is None


def test_the_collector_walks_only_the_members_that_can_hold_a_cycle():
    # the uuid, the Future's state name, state, priority, handle, attempts, worker and
    # timestamps hold strings, ints or a State: not visited (see _instance_traverse)
    owner, job = Owner(), Job("walk", noop)
    inst = Instance(owner, job, 22, ("a",), {"k": 1}, 3, 5)
    inst.processed_ns, inst.completed_ns, inst.worker = 10**18, 10**18 + 1, 1
    inst.set_result(["r"])
    referents = gc.get_referents(inst)
    assert type(inst) in referents and owner in referents and job in referents
    assert inst.args in referents and inst._kwargs in referents and inst._result in referents
    assert inst.uuid_str not in referents and inst.processed_ns not in referents


def test_an_instance_owned_elsewhere_gets_a_weak_reference():
    # An instance handed to a shared queue (its owner then) is not in its owner's
    # table: its finalizer would not leave this one, so the entry is a weak reference.
    from jobengine._core import known_get, lend

    with pytest.raises(TypeError):
        lend({}, object())
    table: dict = {}
    for owner in (None, Owner()):  # no engine; an engine whose table is another
        inst = Instance(owner, Job("fields", noop), 13, (), {}, 0, 0)
        lend(table, inst)
        assert type(table[inst.uuid_str]) is weakref.ReferenceType
        assert known_get(table, inst.uuid_str) is inst
        uuid = inst.uuid_str
        del inst
        assert known_get(table, uuid) is None
        prune_known(table)  # the walk drops the dead reference
        assert uuid not in table


@pytest.mark.timeout(60)
def test_lookups_find_held_instances_and_forget_dropped_ones():
    with Manager(num_workers=2) as m:
        held = [m.submit(pow, 3, i) for i in range(200)]
        dropped = [m.submit(pow, 5, i).uuid_str for i in range(200)]
        m.wait()
        gc.collect()
        found = m.lookup_instances(Query(uuid=held[7].uuid_str))
        assert found == [held[7]] and found[0] is held[7]
        # a dropped one is no object any more: its lookup is built from the store
        again = m.lookup_instances(Query(uuid=dropped[3]))
        assert len(again) == 1 and again[0].uuid_str == dropped[3]
        assert again[0].state is State.COMPLETED


@pytest.mark.timeout(120)
def test_lookups_race_instances_being_dropped_and_collected():
    # Instances dropped (some in cycles, freed by the collector) on one thread while
    # another looks their uuids up: a lookup returns the very object or nothing, never
    # a dead one.
    import random
    import threading

    with Manager(num_workers=2) as m:
        uuids: list[str] = []
        stop = threading.Event()
        errors: list[BaseException] = []

        def produce():
            try:
                for i in range(40):
                    batch = m.submit_many(pow, [2] * 200, range(200))
                    uuids.extend(f.uuid_str for f in batch)
                    for f in batch[::3]:
                        box = [f]
                        f.add_done_callback(lambda _f, box=box: box)  # a cycle
                    for f in batch:
                        f.result(timeout=60)
                    del batch, f, box
                    if i % 5 == 0:
                        gc.collect()
            except BaseException as e:
                errors.append(e)
            finally:
                stop.set()

        def look():
            rng = random.Random(5)
            try:
                while not stop.is_set():
                    if not uuids:
                        continue
                    uuid = uuids[rng.randrange(len(uuids))]
                    for inst in m.lookup_instances(Query(uuid=uuid)):
                        assert inst.uuid_str == uuid and inst.kind
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=produce), threading.Thread(target=look)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=100)
        assert not errors, errors
        assert len(uuids) == 8000


# -- the lookup table against a model ------------------------------------------------------
class LookupTableMachine(RuleBasedStateMachine):
    """The engine's lookup table (an entry lent as the engine admits an instance, the
    handle table holding it while it runs, release_units freeing the handle and
    leaving the table alone) against the model it must follow: an entry finds its
    Instance exactly while that Instance is alive, and no entry outlives it, whoever
    drops it last, in a cycle or not."""

    def __init__(self):
        super().__init__()
        gc.freeze()  # what the process held before: collections here skip it (fast)
        self.owner = Owner()
        self.table = self.owner._known
        self.by_handle: list = []  # the engine's own strong references
        self.free: list = []
        self.user: dict = {}  # the references a caller holds
        self.refs: dict = {}  # uuid -> weakref: the oracle of what is alive
        self.n = 0

    def _alive(self, where):
        return sorted(u for u in where if self.refs[u]() is not None)

    @rule()
    def admit(self):
        self.n += 1
        inst = Instance(self.owner, Job("fields", noop), self.n, (), {}, 0, 0)
        h = self.free.pop() if self.free else len(self.by_handle)
        if h == len(self.by_handle):
            self.by_handle.append(None)
        self.by_handle[h] = inst
        inst.handle = h
        lend(self.table, inst)  # (Engine.admit: remember)
        self.user[inst.uuid_str] = inst
        self.refs[inst.uuid_str] = weakref.ref(inst)

    @rule(data=st.data())
    def release(self, data):
        held = [i for i in self.by_handle if i is not None]
        if held:
            inst = data.draw(st.sampled_from(held))
            before = dict(self.table)
            release_units([inst], self.by_handle, self.free)
            assert inst.handle == -1 and self.by_handle.count(inst) == 0
            assert self.table == before  # (finishing a job never touches the table)

    @rule(data=st.data(), cycle=st.booleans())
    def drop(self, data, cycle):
        if self.user:
            uuid = data.draw(st.sampled_from(sorted(self.user)))
            inst = self.user.pop(uuid)
            if cycle:
                inst.args = (inst,)  # only the collector can free it now
            del inst

    @rule()
    def collect(self):
        gc.collect()
        # what neither a caller nor the handle table holds is gone (the table keeps
        # nobody alive)
        engine_held = {i.uuid_str for i in self.by_handle if i is not None}
        assert self._alive(set(self.refs) - set(self.user) - engine_held) == []

    @rule()
    def prune(self):
        prune_known(self.table)

    def teardown(self):
        gc.unfreeze()

    @invariant()
    def finds_exactly_the_living(self):
        gc.disable()  # (a collection in the middle of the check would move its ground)
        try:
            for uuid, ref in self.refs.items():
                assert known_get(self.table, uuid) is ref()
            assert sorted(self.table) == self._alive(self.refs)
        finally:
            gc.enable()


TestLookupTable = LookupTableMachine.TestCase
TestLookupTable.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
