"""SchedulerCore: property tests against a pure-Python oracle, plus documented errors."""

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from jobengine._core import MAX_HANDLE, PRIORITY_MAX, PRIORITY_MIN, SEQ_LIMIT, SchedulerCore


class Oracle:
    """The documented semantics, written the slow obvious way: what is due (at or
    before the latest pop's now) is ready, ranked by priority (higher first), then due
    time, then add order."""

    def __init__(self):
        self.timers = {}  # handle -> (due, add_order, priority)
        self.ready = {}  # handle -> [priority, due, add_order]
        self.order = 0
        self.floor = None

    def add(self, h, due, prio):
        if self.floor is not None and due <= self.floor:
            self.ready[h] = [prio, due, self.order]
        else:
            self.timers[h] = (due, self.order, prio)
        self.order += 1

    def cancel(self, h):
        return self.ready.pop(h, None) is not None or self.timers.pop(h, None) is not None

    def reprioritize(self, h, prio):
        if h in self.ready:
            self.ready[h][0] = prio
        else:
            due, order, _ = self.timers[h]
            self.timers[h] = (due, order, prio)

    def pop_ready(self, now, n):
        self.floor = now
        for h in [h for h, (d, _, _) in self.timers.items() if d <= now]:
            due, order, prio = self.timers.pop(h)
            self.ready[h] = [prio, due, order]
        best = sorted(self.ready, key=lambda h: (-self.ready[h][0], *self.ready[h][1:]))[:n]
        for h in best:
            del self.ready[h]
        return best

    def next_due(self):
        return min((d for d, _, _ in self.timers.values()), default=None)


priorities = st.one_of(st.integers(-3, 3), st.integers(PRIORITY_MIN, PRIORITY_MAX))


class CoreMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.core = SchedulerCore()
        self.oracle = Oracle()
        self.now = 0
        self.free = list(range(64))

    @precondition(lambda self: self.free)
    @rule(offset=st.integers(-50, 200), prio=priorities, data=st.data())
    def add(self, offset, prio, data):
        h = data.draw(st.sampled_from(self.free))
        self.free.remove(h)
        self.core.add(h, self.now + offset, prio)
        self.oracle.add(h, self.now + offset, prio)

    @rule(h=st.integers(0, 70))
    def cancel(self, h):
        was = self.core.cancel(h)
        assert was == self.oracle.cancel(h)
        if was:
            self.free.append(h)

    @rule(h=st.integers(0, 63), prio=priorities)
    def reprioritize(self, h, prio):
        if h in self.oracle.ready or h in self.oracle.timers:
            self.core.reprioritize(h, prio)
            self.oracle.reprioritize(h, prio)
        else:
            with pytest.raises(KeyError):
                self.core.reprioritize(h, prio)

    @rule(step=st.integers(0, 120), n=st.integers(0, 10))
    def pop_ready(self, step, n):
        self.now += step
        got = self.core.pop_ready(self.now, n)
        assert got == self.oracle.pop_ready(self.now, n)
        self.free.extend(got)

    @invariant()
    def agrees(self):
        o = self.oracle
        assert len(self.core) == self.core.len() == len(o.ready) + len(o.timers)
        assert self.core.ready_len == len(o.ready)
        assert self.core.timer_len == len(o.timers)
        assert self.core.next_due_ns() == o.next_due()
        assert self.core._check()


TestCoreMachine = CoreMachine.TestCase
TestCoreMachine.settings = settings(max_examples=200, stateful_step_count=80, deadline=None)


def test_equal_priorities_run_fifo_and_higher_first():
    c = SchedulerCore()
    for h in range(100):
        c.add(h, 0, h % 3)
    out = c.pop_ready(1, 1000)
    assert out == [h for p in (2, 1, 0) for h in range(100) if h % 3 == p]


def test_timer_never_released_early():
    c = SchedulerCore()
    c.add(1, 1_000, 0)
    assert c.pop_ready(999, 10) == []
    assert c.next_due_ns() == 1_000
    assert c.pop_ready(1_000, 10) == [1]


def test_timers_due_together_keep_due_then_add_order():
    c = SchedulerCore()
    c.add(5, 30, 0)
    c.add(6, 10, 0)
    c.add(7, 10, 0)
    assert c.pop_ready(100, 10) == [6, 7, 5]


def test_negative_and_extreme_due_times_order_correctly():
    c = SchedulerCore()
    c.add(1, 2**63 - 1, 0)
    c.add(2, -(2**63), 0)
    c.add(3, -5, 0)
    assert c.pop_ready(0, 10) == [2, 3]
    assert c.next_due_ns() == 2**63 - 1


def test_sequence_exhaustion_renumbers_without_breaking_fifo():
    c = SchedulerCore()
    c.pop_ready(0, 0)
    c._set_next_seq(SEQ_LIMIT - 3)
    for h in range(10):
        c.add(h, 0, 1 if h % 2 else 0)
    assert c._check()
    assert c.pop_ready(0, 100) == [1, 3, 5, 7, 9, 0, 2, 4, 6, 8]


def test_at_equal_priority_an_earlier_due_time_runs_first_even_when_added_later():
    c = SchedulerCore()
    c.pop_ready(1_000, 0)
    c.add(1, 900, 0)  # all due already: ready at once
    c.add(2, 500, 0)
    c.add(3, 900, 0)
    c.add(4, 100, 5)
    c.add(5, -7, 0)
    assert c.pop_ready(1_000, 10) == [4, 5, 2, 1, 3]


def test_inserting_earlier_entries_again_and_again_renumbers_and_keeps_the_order():
    c = SchedulerCore()
    c.pop_ready(10_000, 0)
    order = []
    for h in range(600):  # each one due before all the others: always the slow path
        c.add(h, 10_000 - h, h % 2)
        order.append(h)
        assert c._check()
    out = c.pop_ready(10_000, 1000)
    assert out == [h for p in (1, 0) for h in reversed(order) if h % 2 == p]


def test_cancel_works_on_both_heaps_and_reports():
    c = SchedulerCore()
    c.add(1, 0, 0)
    c.add(2, 100, 0)
    c.pop_ready(0, 0)  # moves handle 1 into the ready heap
    assert c.ready_len == 1 and c.timer_len == 1
    assert c.cancel(1) and c.cancel(2)
    assert not c.cancel(1) and not c.cancel(-1) and not c.cancel(2**40)
    assert len(c) == 0 and c.pop_ready(1000, 10) == []


def test_reprioritize_a_timer_applies_when_due():
    c = SchedulerCore()
    c.add(1, 10, 0)
    c.add(2, 10, 0)
    c.reprioritize(2, 5)
    assert c.pop_ready(10, 10) == [2, 1]


@pytest.mark.parametrize(
    "call, exc",
    [
        (lambda c: c.add(-1, 0, 0), ValueError),
        (lambda c: c.add(MAX_HANDLE + 1, 0, 0), ValueError),
        (lambda c: c.add(0, 0, PRIORITY_MAX + 1), ValueError),
        (lambda c: c.add(0, 0, PRIORITY_MIN - 1), ValueError),
        (lambda c: c.add(0, 2**63, 0), OverflowError),
        (lambda c: c.add("1", 0, 0), TypeError),
        (lambda c: c.add(0, 1.5, 0), TypeError),
        (lambda c: c.reprioritize(3, 0), KeyError),
        (lambda c: c.reprioritize(3, PRIORITY_MAX + 1), ValueError),
        (lambda c: c.pop_ready(0, -1), ValueError),
    ],
)
def test_bad_input_raises_clean_errors(call, exc):
    c = SchedulerCore()
    with pytest.raises(exc):
        call(c)
    assert len(c) == 0 and c._check()


def test_duplicate_add_is_refused_and_keeps_the_first():
    c = SchedulerCore()
    c.add(3, 50, 1)
    with pytest.raises(ValueError, match="already scheduled"):
        c.add(3, 0, 9)
    assert c.pop_ready(49, 10) == [] and c.pop_ready(50, 10) == [3]


def test_clock_going_backwards_is_refused():
    c = SchedulerCore()
    c.pop_ready(100, 1)
    with pytest.raises(ValueError, match="backwards"):
        c.pop_ready(99, 1)
