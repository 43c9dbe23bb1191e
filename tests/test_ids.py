"""Instance identifiers: UUIDv7 ints (ids.py) and their canonical text (the compiled
core's uuid_text, or uuid7_str: a new one made as text), which every store uses as the
key."""

import time
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobengine._core import uuid_text
from jobengine.ids import uuid7_int, uuid7_str


@given(st.integers(min_value=0, max_value=2**128 - 1))
def test_uuid_text_is_what_the_uuid_module_prints(n):
    assert uuid_text(n) == str(uuid.UUID(int=n))


@pytest.mark.parametrize("n", [0, 1, 2**64 - 1, 2**64, 2**128 - 1])
def test_uuid_text_at_the_edges(n):
    assert uuid_text(n) == str(uuid.UUID(int=n))


@pytest.mark.parametrize(("bad", "error"), [(-1, ValueError), (2**128, ValueError),
                                            ("0", TypeError), (1.0, TypeError)])  # fmt: skip
def test_uuid_text_refuses_what_is_not_a_128_bit_int(bad, error):
    with pytest.raises(error):
        uuid_text(bad)


def test_a_forked_child_makes_other_ids_than_its_parent():
    # the child inherits the counter and the random state; it must not repeat them
    import os

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(w, str(uuid7_int()).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child, mine = int(os.read(r, 100)), uuid7_int()
    os.close(r)
    os.close(w)
    assert child != mine and child & (2**62 - 1) != mine & (2**62 - 1)


def test_uuid7_carries_the_current_millisecond():
    import time

    before = time.time_ns() // 1_000_000
    n = uuid7_int()
    assert before <= n >> 80 <= time.time_ns() // 1_000_000 + 1


def test_uuid7_ints_grow_and_are_version_7():
    ids = [uuid7_int() for _ in range(10_000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for n in ids[:100]:
        u = uuid.UUID(int=n)
        assert u.version == 7 and u.variant == uuid.RFC_4122


def test_uuid7_text_is_the_next_uuid7_as_text():
    # made from one sequence: ints and texts interleaved still grow, text order too
    made = []
    for i in range(6_000):
        made.append(uuid7_str() if i % 2 else uuid_text(uuid7_int()))
    assert made == sorted(made) and len(set(made)) == len(made)
    for t in made[:200]:
        u = uuid.UUID(t)
        assert str(u) == t and u.version == 7 and u.variant == uuid.RFC_4122
    assert uuid.UUID(made[-1]).int >> 80 <= time.time_ns() // 1_000_000 + 1
