"""The memory store's compact rows: an instance that is only queued (SCHEDULED when
made, with just its CREATED and SCHEDULED records) is kept as a _core.QueuedRow (kind,
priority, created_ns unboxed) instead of the 16-item list, and reads back exactly as
the list did.
Checked three ways: the compiled write (_core.memory_write) against a Python reference
of the list layout over random batches; what a user reads through a Manager before and
after the queue runs; and the memory a queued instance costs the store."""

import gc
import tracemalloc

import jobs
from hypothesis import given, settings
from hypothesis import strategies as st

from jobengine import Job, Manager, Query, State, _core
from jobengine.records import FINAL_STATES
from jobengine.stores.memory import MemoryStore

T0 = 1_796_000_000_000_000_000
KIND = "rows"


def _reference_write(rows, instances, states):
    # MemoryStore's list layout, as memory_write kept it before rows could be compact
    for r in instances:
        row = rows.setdefault(r[0], [r[1], None, 0, 0, 0, None, None, None])
        row[0:8] = r[1:9]
    for r in states:
        row = rows.setdefault(r[0], [r[1], None, 0, 0, 0, None, None, None])
        row.extend((r[2] | r[4] << 8 | r[6] << 24, r[3], r[5], r[7]))


def _head(
    uuid,
    state,
    created,
    scheduled=None,
    attempts=0,
    processed=None,
    priority=0,
    completed=None,
    outcome=None,
):
    # an instance row as the recorder's snapshots() makes it
    return (uuid, KIND, state, priority, attempts, created,
            created if scheduled is None else scheduled, processed, completed,
            outcome)  # fmt: skip


RESULT = ("r", b"\x80\x05N.")  # the outcome of a job that returned None


def _rec(uuid, state, t, attempt=0, worker=None, run=1, cause=None):
    return (uuid, KIND, state, t, attempt, worker, run, cause)


def _story(uuid, created, events):
    """The records of one instance: made (a snapshot, CREATED, SCHEDULED), then each of
    `events` (a kind of change a real instance goes through, or a deviation from the
    queued pattern that must keep the list)."""
    s, c = State.SCHEDULED._value_, State.CREATED._value_
    # "late": its SCHEDULED record a moment after its CREATED one (not the pattern:
    # a compact row made from the snapshot must give back the CREATED record it took)
    late = 1 if "late" in events else 0
    out = [("i", _head(uuid, s, created)), ("s", _rec(uuid, c, created)),
           ("s", _rec(uuid, s, created + late))]  # fmt: skip
    t = created
    for ev in events:
        t += 1000
        if ev == "start":
            p = State.PROCESSING._value_
            out += [("i", _head(uuid, p, created, processed=t, attempts=1)),
                    ("s", _rec(uuid, p, t, attempt=1, worker=0))]  # fmt: skip
        elif ev == "reschedule":  # a retry: SCHEDULED again, later
            out += [("i", _head(uuid, s, created, scheduled=t, attempts=1)),
                    ("s", _rec(uuid, s, t, attempt=1))]  # fmt: skip
        elif ev == "touch":  # the same snapshot written again
            out.append(("i", _head(uuid, s, created)))
        elif ev == "delayed":  # due later than made: its header differs from the pattern
            out.append(("i", _head(uuid, s, created, scheduled=created + 5)))
        elif ev == "priority":
            out.append(("i", _head(uuid, s, created, priority=7)))
        elif ev == "cause":  # a record the pattern does not cover
            out.append(("s", _rec(uuid, s, created, cause="why")))
        elif ev == "done":
            d = State.COMPLETED._value_
            out += [("i", _head(uuid, d, created, processed=t, attempts=1)),
                    ("s", _rec(uuid, d, t, attempt=1, worker=1))]  # fmt: skip
        elif ev in ("run", "run_seen", "run_moved"):
            # an attempt that completes, as the engine records it: PROCESSING, then
            # COMPLETED on the same worker ("run_moved": another worker, not the
            # pattern), the final snapshot with its times and outcome; "run_seen": the
            # PROCESSING snapshot too (the recorder flushed between the two events)
            p, d = State.PROCESSING._value_, State.COMPLETED._value_
            w2 = 2 if ev == "run_moved" else 1
            if ev == "run_seen":
                out.append(("i", _head(uuid, p, created, processed=t, attempts=1)))
            out += [("s", _rec(uuid, p, t, attempt=1, worker=1)),
                    ("i", _head(uuid, d, created, processed=t, attempts=1, completed=t + 7,
                                outcome=RESULT)),
                    ("s", _rec(uuid, d, t + 7, attempt=1, worker=w2))]  # fmt: skip
    return out


EVENTS = st.sampled_from(
    ["start", "reschedule", "touch", "delayed", "priority", "cause", "done", "late", "run",
     "run_seen", "run_moved"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.lists(EVENTS, max_size=3), min_size=1, max_size=5),
    st.randoms(use_true_random=False),
    st.integers(1, 6),
    st.booleans(),
)
def test_rows_read_back_as_the_reference_list(events_per_instance, rnd, batch_size, buffered):
    # each instance's records in order; the instances interleaved at random; cut into
    # batches of any size (the recorder splits a flush, so a snapshot and its records can
    # land in different batches, records even before their snapshot's batch)
    stories = [_story(f"u{i}", T0 + i, ev) for i, ev in enumerate(events_per_instance)]
    merged = []
    while any(stories):
        story = rnd.choice([s for s in stories if s])
        merged.append(story.pop(0))
    rows, ref, finished, outcomes, logs = {}, {}, {}, {}, {}
    for i in range(0, len(merged), batch_size):
        part = merged[i : i + batch_size]
        instances = [r for k, r in part if k == "i"]
        states = [r for k, r in part if k == "s"]
        given = states
        if buffered:  # the recorder's form, read in place (STATE_ROW tuples otherwise)
            given = _core.RecordBuffer()
            for r in states:
                given.append(*r)
        _core.memory_write(rows, finished, outcomes, instances, given, [], logs,
                           FINAL_STATES, None, 1 << 20, False, -1)  # fmt: skip
        _reference_write(ref, instances, states)
        assert {u: _core.memory_row_list(r) for u, r in rows.items()} == ref
        assert {u: _core.memory_row_header(r) for u, r in rows.items()} == {
            u: r[:8] for u, r in ref.items()
        }
        for uuid, row in rows.items():
            if type(row) is _core.QueuedRow:  # compact only while exactly a queued one
                assert ref[uuid] == _core.memory_row_list(row)
                assert len(ref[uuid]) == 16
                assert ref[uuid][1] == State.SCHEDULED._value_
            elif type(row) is _core.DoneRow:  # or exactly a first attempt that completed
                assert len(ref[uuid]) == 24
                assert ref[uuid][1] == State.COMPLETED._value_
                assert ref[uuid][18] == ref[uuid][22] == row.worker
            # the store keeps a uuid in `finished` exactly while its row is final
            assert (uuid in finished) == (ref[uuid][1] in FINAL_STATES)


def test_a_queued_instance_is_compact_until_it_changes():
    rows, finished, outcomes, logs = {}, {}, {}, {}

    def write(records):
        instances = [r for k, r in records if k == "i"]
        states = [r for k, r in records if k == "s"]
        _core.memory_write(rows, finished, outcomes, instances, states, [], logs,
                           FINAL_STATES, None, 1 << 20, False, -1)  # fmt: skip

    made = _story("a", T0, [])
    write(made)
    compact = rows["a"]
    assert type(compact) is _core.QueuedRow
    assert (compact.kind, compact.priority, compact.created_ns) == (KIND, 0, T0)
    assert _core.memory_row_list(rows["a"]) == [
        KIND, 2, 0, 0, T0, T0, None, None,
        1 | 1 << 24, T0, None, None, 2 | 1 << 24, T0, None, None,
    ]  # fmt: skip
    started = _story("a", T0, ["start"])[3:]
    write(started)
    assert type(rows["a"]) is list
    assert rows["a"][1] == State.PROCESSING._value_
    assert len(rows["a"]) == 20  # both records it stood for, then PROCESSING's
    # a delayed instance (due later than made) keeps its list
    write(_story("b", T0, ["delayed"]))
    assert type(rows["b"]) is list
    # the values the compiled code assumes
    assert (State.CREATED._value_, State.SCHEDULED._value_) == (1, 2)


def test_a_write_that_fails_half_way_leaves_no_row_claiming_records_it_lacks():
    # memory_write makes a new queued instance's compact row from its snapshot and
    # counts its two records in as they come: a record that cannot be read (here the
    # second) stops the write, and the row keeps only what was written
    rows, finished, outcomes, logs = {}, {}, {}, {}
    snapshot, created, _scheduled = [r for _k, r in _story("a", T0, [])]
    bad = ("a", KIND, "SCHEDULED", T0, 0, None, 1, None)  # a state that is not a number
    try:
        _core.memory_write(rows, finished, outcomes, [snapshot], [created, bad], [], logs,
                           FINAL_STATES, None, 1 << 20, False, -1)  # fmt: skip
    except TypeError:
        pass
    else:
        raise AssertionError("the bad record was accepted")
    assert type(rows["a"]) is list
    assert rows["a"] == [KIND, 2, 0, 0, T0, T0, None, None, 1 | 1 << 24, T0, None, None]


def _history(m, uuid):
    return [(r.state, r.time_ns, r.attempt, r.worker, r.run, r.cause)
            for r in m.lookup_instance_history(uuid)]  # fmt: skip


def test_queued_instances_read_back_through_the_manager():
    store = MemoryStore()
    m = Manager(num_workers=2, store=store)
    job = m.register_job(Job("compact", jobs.add))
    try:
        insts = [m.schedule_job(job, args=(i, 1), priority=i % 3) for i in range(50)]
        later = m.schedule_job(job, args=(0, 0), schedule_after=3600)
        first = insts[0]
        hist = _history(m, first.uuid_str)
        assert hist == [(State.CREATED, first.created_ns, 0, None, 1, None),
                        (State.SCHEDULED, first.created_ns, 0, None, 1, None)]  # fmt: skip
        rec = store.get_instance(first.uuid_str)
        assert (rec.kind, rec.state, rec.priority, rec.attempts) == (
            "compact",
            State.SCHEDULED,
            0,
            0,
        )
        assert rec.created_ns == rec.scheduled_ns == first.created_ns
        assert rec.processed_ns is None and rec.completed_ns is None
        assert store.get_instance(insts[2].uuid_str).priority == 2
        assert store.get_instance(later.uuid_str).scheduled_ns > later.created_ns
        queued = store.lookup_instances(Query(state=State.SCHEDULED))
        assert {r.uuid for r in queued} == {i.uuid_str for i in insts} | {later.uuid_str}
        # a window that ends before they were made removes nothing; one that covers
        # them removes their records and keeps the instances (not finished)
        assert store.clear_history(before_ns=first.created_ns) == 0
        assert len(_history(m, first.uuid_str)) == 2
        m.start()
        assert [i.result(timeout=30) for i in insts] == [i + 1 for i in range(50)]
        assert later.cancel()
        hist = _history(m, first.uuid_str)
        assert [h[0] for h in hist] == [State.CREATED, State.SCHEDULED, State.PROCESSING,
                                        State.COMPLETED]  # fmt: skip
        assert store.get_instance(first.uuid_str).state == State.COMPLETED
    finally:
        m.stop()


def test_clear_history_of_a_compact_row():
    store = MemoryStore()
    m = Manager(num_workers=1, store=store)
    job = m.register_job(Job("clear", jobs.noop))
    try:
        inst = m.schedule_job(job)
        m.lookup_instance_history("")  # written
        removed = store.clear_history(after_ns=inst.created_ns)
        assert removed == 2
        assert _history(m, inst.uuid_str) == []
        assert store.get_instance(inst.uuid_str).state == State.SCHEDULED  # still queued
    finally:
        m.stop()


def _store_growth(step) -> int:
    """Bytes that the memory store's code (and the recorder's) holds more after step()
    than before it, as tracemalloc counts them, garbage collected on both sides."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        step()
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    return sum(
        s.size_diff
        for s in after.compare_to(before, "filename")
        if s.traceback[0].filename.endswith(("stores/memory.py", "recorder.py"))
    )


def test_a_queued_instance_costs_the_store_under_a_hundred_bytes():
    # the compact row: a 48-byte QueuedRow and its dict entry (the list it replaces,
    # with its two records, was ~222 bytes; a tuple and its time's int, 102); measured
    # on the store's own writes
    n = 20_000
    store = MemoryStore(max_instances=None)
    m = Manager(num_workers=1, store=store)
    job = m.register_job(Job("mem", jobs.noop))
    try:
        insts = [m.schedule_job(job) for _ in range(n)]
        # (the store writes them all at the lookup)
        grown = _store_growth(lambda: m.lookup_instance_history(""))
        assert grown / n <= 95, grown / n
        assert len(insts) == n
    finally:
        m.stop()


def _retained(store: MemoryStore) -> list[str]:
    return sorted(r.uuid for r in store.lookup_instances(Query()))


def test_retention_follows_the_latest_end_of_each_instance():
    # memory_write learns whether `finished` holds an instance from its row's state
    # before the write: an instance that ends, runs again (a recurrence) and ends
    # again must be the newest to have ended, and one running again is never dropped
    completed, running = int(State.COMPLETED), int(State.PROCESSING)
    store = MemoryStore(max_instances=2)

    def write(uuid, state, t):
        row = (uuid, KIND, state, 0, 1, T0, T0, T0 + t, T0 + t if state in FINAL_STATES else None,
               None)  # fmt: skip
        store.write_batch([row], [], [])

    write("a", completed, 1)
    write("b", completed, 2)
    write("a", running, 3)  # a runs again: it has not ended, nothing to retain it by
    write("c", completed, 4)
    assert _retained(store) == ["a", "b", "c"]
    write("a", completed, 5)  # a ends again, after c: b is now the oldest to have ended
    assert _retained(store) == ["a", "c"]
    write("d", completed, 6)
    assert _retained(store) == ["a", "d"]
    # ended again with no run between in the store's eyes (one flush saw the run
    # start and end: the snapshot holds only its final state): now the newest too
    write("a", completed, 7)
    write("e", completed, 8)
    assert _retained(store) == ["a", "e"]


def test_put_instances_rows_are_retained_like_written_ones():
    # the per-record path keeps `finished` as write_batch does, so retention reaches
    # its rows and a later write_batch of the same instance finds the store as it left it
    from jobengine.records import InstanceRecord

    def rec(uuid, state, t):
        done = T0 + t if state in FINAL_STATES else None
        return InstanceRecord(uuid, KIND, state, 0, 1, T0, T0, T0 + t, done)

    store = MemoryStore(max_instances=None)
    store.put_instances([rec("a", State.COMPLETED, 1), rec("b", State.TERMINATED, 2)])
    store.put_instances([rec("a", State.PROCESSING, 3)])  # a runs again
    store.write_batch([("c", KIND, int(State.COMPLETED), 0, 1, T0, T0, T0, T0 + 4, None)], [], [])
    store.set_retention(max_instances=1)
    assert store.apply_retention(T0) == 1  # b, the oldest to have ended; a is running
    assert _retained(store) == ["a", "c"]
    store.write_batch([("a", KIND, int(State.COMPLETED), 0, 1, T0, T0, T0, T0 + 5, None)], [], [])
    assert _retained(store) == ["a"]


def _write_all(rows, finished, outcomes, records):
    instances = [r for k, r in records if k == "i"]
    states = [r for k, r in records if k == "s"]
    _core.memory_write(rows, finished, outcomes, instances, states, [], {}, FINAL_STATES,
                       None, 1 << 20, False, -1)  # fmt: skip


def _full_list(uuid, created, started, completed, worker=1):
    return [KIND, 8, 0, 1, created, created, started, completed,
            1 | 1 << 24, created, None, None, 2 | 1 << 24, created, None, None,
            4 | 1 << 8 | 1 << 24, started, worker, None,
            8 | 1 << 8 | 1 << 24, completed, worker, None]  # fmt: skip


def test_a_first_attempt_that_completed_is_compact():
    rows, finished, outcomes = {}, {}, {}
    story = _story("a", T0, ["run"])  # made, then run: started at T0 + 1000, done + 7
    _write_all(rows, finished, outcomes, story[:3])  # queued: one batch
    assert type(rows["a"]) is _core.QueuedRow
    _write_all(rows, finished, outcomes, story[3:])  # its run: the next
    done = rows["a"]
    assert type(done) is _core.DoneRow
    assert (done.kind, done.priority, done.worker) == (KIND, 0, 1)
    assert (done.created_ns, done.processed_ns, done.completed_ns) == (T0, T0 + 1000, T0 + 1007)
    assert _core.memory_row_list(done) == _full_list("a", T0, T0 + 1000, T0 + 1007)
    assert finished == {"a": T0 + 1007} and outcomes == {"a": RESULT}
    # made and run within one batch (a job shorter than the recorder's flush)
    _write_all(rows, finished, outcomes, _story("b", T0, ["run"]))
    assert type(rows["b"]) is _core.DoneRow
    assert _core.memory_row_list(rows["b"]) == _full_list("b", T0, T0 + 1000, T0 + 1007)
    # its PROCESSING record in one batch, the rest in the next (a job longer than a
    # turn): a list, compact again once COMPLETED is written
    story = _story("c", T0, ["run_seen"])
    _write_all(rows, finished, outcomes, story[:5])
    assert type(rows["c"]) is list and len(rows["c"]) == 20
    _write_all(rows, finished, outcomes, story[5:])
    assert type(rows["c"]) is _core.DoneRow
    assert _core.memory_row_list(rows["c"]) == _full_list("c", T0, T0 + 1000, T0 + 1007)
    # not the pattern: the two records on different workers, a second attempt, a record
    # with a cause
    _write_all(rows, finished, outcomes, _story("d", T0, ["run_moved"]))
    _write_all(rows, finished, outcomes, _story("e", T0, ["reschedule", "run"]))
    _write_all(rows, finished, outcomes, _story("f", T0, ["cause", "run"]))
    assert [type(rows[u]) for u in "def"] == [list, list, list]
    # written again once finished: the list it stands for, then the change
    _write_all(rows, finished, outcomes, [("s", _rec("a", 8, T0 + 2000, 1, 1, cause="x"))])
    again = [8 | 1 << 8 | 1 << 24, T0 + 2000, 1, "x"]
    assert rows["a"] == [*_full_list("a", T0, T0 + 1000, T0 + 1007), *again]
    # the values the compiled code assumes
    assert (State.PROCESSING._value_, State.COMPLETED._value_) == (4, 8)


def test_a_run_written_half_way_leaves_no_row_claiming_records_it_lacks():
    # the final snapshot makes the compact row, which counts its four records in: a
    # record that cannot be read (here the third) stops the write, and the row keeps
    # only the two that were written
    rows, finished, outcomes = {}, {}, {}
    story = [r for _k, r in _story("a", T0, ["run"])]
    snapshot = story[4]
    bad = ("a", KIND, "PROCESSING", T0 + 1000, 1, 1, 1, None)
    try:
        _core.memory_write(rows, finished, outcomes, [snapshot], [story[1], story[2], bad],
                           [], {}, FINAL_STATES, None, 1 << 20, False, -1)  # fmt: skip
    except TypeError:
        pass
    else:
        raise AssertionError("the bad record was accepted")
    assert rows["a"] == _full_list("a", T0, T0 + 1000, T0 + 1007)[:16]


def test_finished_instances_read_back_through_the_manager():
    store = MemoryStore()
    m = Manager(num_workers=2, store=store)
    job = m.register_job(Job("compact-done", jobs.add))
    try:
        m.start()
        insts = [m.schedule_job(job, args=(i, 1), priority=i % 3) for i in range(40)]
        assert [i.result(timeout=30) for i in insts] == [i + 1 for i in range(40)]
        m.lookup_instance_history("")  # written
        rows = store._rows  # noqa: SLF001 - the form a row takes, which reads never show
        compact = [i for i in insts if type(rows[i.uuid_str]) is _core.DoneRow]
        assert compact  # (each one whose records the engine had in one story)
        for inst in compact:
            hist = _history(m, inst.uuid_str)
            assert [h[0] for h in hist] == [State.CREATED, State.SCHEDULED,
                                            State.PROCESSING, State.COMPLETED]  # fmt: skip
            assert [h[1] for h in hist] == [inst.created_ns, inst.created_ns,
                                            inst.processed_ns, inst.completed_ns]  # fmt: skip
            assert hist[2][3] == hist[3][3] is not None  # one worker
            rec = store.get_instance(inst.uuid_str)
            assert (rec.state, rec.attempts, rec.priority, rec.completed_ns) == (
                State.COMPLETED, 1, inst.priority, inst.completed_ns)  # fmt: skip
            assert rec.result() == inst.result()
        done = store.lookup_instances(Query(state=State.COMPLETED))
        assert {r.uuid for r in done} == {i.uuid_str for i in insts}
        # a window before them removes nothing; one around the first's start removes its
        # PROCESSING record only
        first = compact[0]
        assert store.clear_history(before_ns=first.created_ns) == 0
        assert len(_history(m, first.uuid_str)) == 4
        removed = store.clear_history(after_ns=first.processed_ns,
                                      before_ns=first.processed_ns + 1)  # fmt: skip
        assert removed >= 1
        assert State.PROCESSING not in [h[0] for h in _history(m, first.uuid_str)]
    finally:
        m.stop()


def test_a_finished_instance_costs_the_store_under_two_hundred_bytes():
    # the compact row (a 72-byte DoneRow) and its entries in the row, finished and
    # outcome dicts (the 24-item list it replaces, with its times, was ~400 bytes)
    n = 5_000
    store = MemoryStore(max_instances=None)
    m = Manager(num_workers=2, store=store)
    job = m.register_job(Job("mem-done", jobs.noop))
    try:
        m.start()
        m.schedule_job(job).result(timeout=30)  # the pool up and warm
        kinds = []

        def run_them():
            insts = [m.schedule_job(job) for _ in range(n)]
            for inst in insts:
                inst.result(timeout=60)
            m.lookup_instance_history("")  # written
            rows = store._rows  # noqa: SLF001 - the form a row takes
            kinds.extend(type(rows[i.uuid_str]) for i in insts)

        grown = _store_growth(run_them)
        compact = kinds.count(_core.DoneRow)
        assert compact >= n * 0.9, compact
        assert grown / n <= 200, grown / n
    finally:
        m.stop()
