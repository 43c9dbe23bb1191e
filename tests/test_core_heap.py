"""Heap: property tests against a pure-Python oracle, plus the documented errors."""

import threading
from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from jobengine._core import Heap

keys = st.integers(min_value=0, max_value=2**64 - 1)
small_keys = st.integers(min_value=0, max_value=20)  # many ties


class HeapMachine(RuleBasedStateMachine):
    """Every operation, randomly interleaved, against a dict oracle {handle: key}."""

    def __init__(self):
        super().__init__()
        self.heap = Heap()
        self.live: dict[int, int] = {}
        self.dead: set[int] = set()

    def _min_key(self):
        return min(self.live.values())

    @rule(key=st.one_of(keys, small_keys))
    def push(self, key):
        h = self.heap.push(key)
        assert h not in self.live
        self.live[h] = key

    @rule(ks=st.lists(st.one_of(keys, small_keys), max_size=40))
    def push_many(self, ks):
        hs = self.heap.push_many(array("Q", ks))
        assert len(hs) == len(ks)
        for h, k in zip(hs, ks, strict=True):
            assert h not in self.live
            self.live[h] = k

    @precondition(lambda self: self.live)
    @rule()
    def pop(self):
        key, h = self.heap.pop()
        assert key == self._min_key()
        assert self.live.pop(h) == key
        self.dead.add(h)

    @rule(n=st.integers(min_value=0, max_value=50))
    def pop_many(self, n):
        ks, hs = self.heap.pop_many(n)
        expected = sorted(self.live.values())[:n]
        assert list(ks) == expected
        for k, h in zip(ks, hs, strict=True):
            assert self.live.pop(h) == k
            self.dead.add(h)

    @precondition(lambda self: self.live)
    @rule()
    def peek(self):
        key, h = self.heap.peek()
        assert key == self._min_key()
        assert self.live[h] == key

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def remove(self, data):
        h = data.draw(st.sampled_from(sorted(self.live)))
        assert self.heap.remove(h) == self.live.pop(h)
        self.dead.add(h)

    @precondition(lambda self: self.live)
    @rule(data=st.data(), key=st.one_of(keys, small_keys))
    def update(self, data, key):
        h = data.draw(st.sampled_from(sorted(self.live)))
        self.heap.update(h, key)
        self.live[h] = key
        assert self.heap.key_of(h) == key

    @precondition(lambda self: self.dead)
    @rule(data=st.data())
    def stale_handles_are_rejected(self, data):
        h = data.draw(st.sampled_from(sorted(self.dead)))
        if h in self.live:  # a slot reused with a new generation is a new handle
            return
        assert h not in self.heap
        with pytest.raises(KeyError):
            self.heap.remove(h)
        with pytest.raises(KeyError):
            self.heap.update(h, 1)

    @invariant()
    def agrees(self):
        assert len(self.heap) == self.heap.len() == len(self.live)
        assert self.heap._check()


TestHeapMachine = HeapMachine.TestCase
TestHeapMachine.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)


@given(st.lists(keys, max_size=2000))
@settings(deadline=None)
def test_batch_roundtrip_sorts(ks):
    h = Heap()
    h.push_many(ks)  # plain list path
    out, handles = h.pop_many(len(ks) + 5)
    assert list(out) == sorted(ks)
    assert len(set(handles)) == len(ks)
    assert len(h) == 0


def test_large_batch_releases_gil_and_sorts():
    import random

    rng = random.Random(7)
    ks = array("Q", (rng.getrandbits(64) for _ in range(100_000)))
    h = Heap()
    h.push_many(ks)
    out, _ = h.pop_many(100_000)
    assert list(out) == sorted(ks)


def test_busy_heap_refuses_other_threads():
    """While a GIL-free batch runs, another thread's call is refused, not interleaved."""
    h = Heap()
    ks = array("Q", range(3_000_000, 0, -1))
    errors = []
    done = threading.Event()

    def poke():
        while not done.is_set():
            try:
                h.push(1)
            except RuntimeError as e:
                errors.append(e)
                return

    t = threading.Thread(target=poke)
    t.start()
    try:
        for _ in range(20):
            h.push_many(ks)
            h.pop_many(len(h))
            if errors:
                break
    finally:
        done.set()
        t.join()
    assert errors, "a call during a GIL-free batch was not refused"
    assert "in use" in str(errors[0])
    assert h._check()


@pytest.mark.parametrize(
    "call, exc",
    [
        (lambda h: h.pop(), IndexError),
        (lambda h: h.peek(), IndexError),
        (lambda h: h.push(-1), OverflowError),
        (lambda h: h.push(2**64), OverflowError),
        (lambda h: h.push("3"), TypeError),
        (lambda h: h.push(1.5), TypeError),
        (lambda h: h.remove(12345), KeyError),
        (lambda h: h.update(99, 1), KeyError),
        (lambda h: h.key_of(0), KeyError),
        (lambda h: h.pop_many(-1), ValueError),
        (lambda h: h.push_many([1, -2]), OverflowError),
        (lambda h: h.push_many(array("d", [1.0])), TypeError),
    ],
)
def test_bad_input_raises_clean_errors(call, exc):
    h = Heap()
    with pytest.raises(exc):
        call(h)
    assert len(h) == 0 and h._check()


def test_push_many_accepts_int64_buffer_of_nonnegative_values():
    h = Heap()
    h.push_many(array("q", [5, 1, 3]))
    assert list(h.pop_many(3)[0]) == [1, 3, 5]


def test_failed_batch_leaves_heap_untouched():
    h = Heap()
    h.push(4)
    with pytest.raises(OverflowError):
        h.push_many([1, 2, -3])
    assert len(h) == 1 and h.pop()[0] == 4


@pytest.mark.parametrize("n, k", [(10_000, 1_250), (10_000, 9_999), (5_000, 5_000), (4_096, 600)])
def test_large_partial_pop_many_keeps_the_rest_a_valid_indexed_heap(n, k):
    """pop_many sorts instead of popping when it takes a large share of a big heap;
    the entries left behind must stay reachable by handle and in heap order."""
    import random

    rng = random.Random(n + k)
    ks = [rng.choice([rng.getrandbits(64), rng.randrange(50)]) for _ in range(n)]
    h = Heap()
    handles = h.push_many(ks)
    out, popped = h.pop_many(k)
    assert list(out) == sorted(ks)[:k]
    assert h._check() and len(h) == n - k
    by_handle = dict(zip(handles, ks, strict=True))
    assert all(by_handle[hd] == key for hd, key in zip(popped, out, strict=True))
    gone = set(popped)
    rest = [hd for hd in handles if hd not in gone]
    for hd in rest[::7]:
        assert h.remove(hd) == by_handle[hd]
    remaining = sorted(by_handle[hd] for i, hd in enumerate(rest) if i % 7)
    assert list(h.pop_many(n)[0]) == remaining


def test_threads_racing_on_one_heap_get_busy_errors_never_corruption():
    # Converting an iterable of keys runs Python code (here: a generator that forces
    # thread switches and collections mid-way), so another thread can get in between
    # the busy check and the batch.  It must be turned away (RuntimeError), never let
    # in to reallocate under a batch running without the GIL.
    import gc
    import sys
    import threading
    import time

    h = Heap()
    pushed = [0] * 4
    popped = [0] * 4
    refused = [0] * 4
    errors = []

    def keys(n, seed):
        for i in range(n):
            if i % 50 == 0:
                time.sleep(0)  # give the GIL away inside the conversion
                if i % 500 == 0:
                    gc.collect()
            yield (seed * 7919 + i * 104729) % 1_000_003

    def hammer(t):
        try:
            for r in range(60):
                try:
                    if r % 3 == 2:
                        popped[t] += len(h.pop_many(3000)[0])
                    else:
                        pushed[t] += len(h.push_many(keys(2500, t * 1000 + r)))
                except RuntimeError:
                    refused[t] += 1
        except BaseException as e:  # report, do not hang the test
            errors.append(e)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        threads = [threading.Thread(target=hammer, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(120)
    finally:
        sys.setswitchinterval(old)
    assert not errors, errors
    assert h._check()
    assert len(h) == sum(pushed) - sum(popped)
    assert sum(refused) > 0  # the race was exercised: callers were turned away
