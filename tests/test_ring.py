"""The shared-memory rings across real processes."""

import mmap
import os
import signal
import threading
import time

import pytest

from jobengine._core import (
    Doorbell,
    RecordTooLarge,
    Ring,
    any_consumer_parked,
    pause_without_gil,
)


def _pair(size=1 << 16):
    mem = mmap.mmap(-1, size)
    bell_mem = mmap.mmap(-1, 64)
    bell = Doorbell(bell_mem, format=True)
    producer = Ring(mem, bell, format=True)
    consumer = Ring(mem, bell)
    return mem, bell_mem, bell, producer, consumer


def _child(fn):
    pid = os.fork()
    if pid == 0:
        try:
            fn()
        finally:
            os._exit(0)
    return pid


def test_records_cross_processes_in_order_with_wraparound():
    mem, bell_mem, bell, _, consumer = _pair()
    n = 50_000  # ~60 laps of a 64 KiB ring

    def produce():
        p = Ring(mem, Doorbell(bell_mem))
        for i in range(n):
            payload = bytes([i % 251]) * (i % 300)
            while not p.push(7, i, i * 3, payload):
                time.sleep(0)

    pid = _child(produce)
    got = 0
    deadline = time.monotonic() + 30
    while got < n and time.monotonic() < deadline:
        bell.wait([consumer], timeout=1.0, spin=20e-6)
        for tag, a, b, payload in consumer.read_many():
            assert (tag, a, b) == (7, got, got * 3)
            assert payload == bytes([got % 251]) * (got % 300)
            got += 1
    os.waitpid(pid, 0)
    assert got == n


def test_batches_publish_once_and_read_many_respects_max():
    _, _, _, p, c = _pair()
    for i in range(100):
        assert p.write(1, i, 0, b"abc")
    assert c.read_many() == []  # written but not yet published
    p.publish()
    first = c.read_many(30)
    rest = c.read_many()
    assert [r[1] for r in first + rest] == list(range(100))
    assert len(first) == 30


def test_full_ring_refuses_then_accepts_after_consumer_catches_up():
    _, _, _, p, c = _pair(4096 + 256)
    pushed = 0
    while p.push(1, pushed, 0, b"x" * 100):
        pushed += 1
    assert 0 < pushed < 40
    assert len(c.read_many(5)) == 5
    assert p.push(1, pushed, 0, b"x" * 100)


def test_large_record_is_a_clear_error_and_writes_nothing():
    _, _, _, p, c = _pair()
    with pytest.raises(RecordTooLarge, match="max_payload"):
        p.push(1, 0, 0, b"x" * (p.max_payload + 1))
    assert p.push(1, 0, 0, b"y" * p.max_payload)
    (rec,) = c.read_many()
    assert len(rec[3]) == p.max_payload


def test_unpublished_writes_of_a_killed_producer_are_never_seen():
    mem, bell_mem, _, _, consumer = _pair()
    ready = os.pipe()

    def produce():
        p = Ring(mem, Doorbell(bell_mem))
        for i in range(10):
            p.push(1, i, 0, b"done")
        p.write(1, 99, 0, b"half")  # never published
        os.write(ready[1], b"!")
        time.sleep(60)

    pid = _child(produce)
    os.read(ready[0], 1)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    records = consumer.read_many()
    assert [r[1] for r in records] == list(range(10))
    assert consumer.read_many() == []


def test_consumer_parks_and_is_woken_by_a_producer_in_another_process():
    mem, bell_mem, bell, _, consumer = _pair()

    def produce():
        time.sleep(0.2)
        Ring(mem, Doorbell(bell_mem)).push(3, 1, 2, b"wake")

    pid = _child(produce)
    t = time.monotonic()
    assert bell.wait([consumer], timeout=5.0)
    waited = time.monotonic() - t
    os.waitpid(pid, 0)
    assert 0.15 < waited < 2.0
    assert consumer.read_many()[0][3] == b"wake"


def test_wait_times_out_when_nothing_comes():
    _, _, bell, _, consumer = _pair()
    t = time.monotonic()
    assert not bell.wait([consumer], timeout=0.05)
    assert not consumer.wait(timeout=0.05)
    assert time.monotonic() - t >= 0.09


def test_doorbell_flags_wake_and_accumulate():
    _, _, bell, _, consumer = _pair()
    bell.ring(1)
    bell.ring(2)
    assert bell.wait([consumer], timeout=0)
    assert bell.take() == 3
    assert bell.take() == 0


def test_attaching_to_garbage_is_refused():
    with pytest.raises(ValueError, match="formatted"):
        Ring(mmap.mmap(-1, 1 << 16))
    with pytest.raises(ValueError, match="at least"):
        Ring(mmap.mmap(-1, 1024), format=True)


def test_push_many_publishes_a_batch_and_stops_when_full():
    _, _, _, p, c = _pair(4096 + 256)
    records = [(2, i, i, bytes([i]) * 200) for i in range(50)]
    n = p.push_many(records)
    assert 0 < n < 50
    got = c.read_many()
    assert [(t, a, b, pl) for t, a, b, pl in got] == records[:n]
    assert p.push_many(records[n:]) > 0  # the rest fits once the consumer caught up


def test_push_many_large_batch_without_the_gil_crosses_processes():
    mem, bell_mem, bell, _, consumer = _pair(1 << 20)
    batch = [(5, i, 0, os.urandom(1000)) for i in range(200)]  # 200 KB: the nogil path

    def produce():
        p = Ring(mem, Doorbell(bell_mem))
        left = batch
        while left:
            left = left[p.push_many(left) :]

    pid = _child(produce)
    got = []
    while len(got) < 200:
        assert bell.wait([consumer], timeout=5)
        got += consumer.read_many()
    os.waitpid(pid, 0)
    assert got == batch


def test_push_many_refuses_oversized_and_non_bytes_and_writes_nothing():
    _, _, _, p, c = _pair()
    with pytest.raises(RecordTooLarge, match="record 1"):
        p.push_many([(1, 0, 0, b"ok"), (1, 0, 0, b"x" * (p.max_payload + 1))])
    with pytest.raises(TypeError, match="bytes"):
        p.push_many([(1, 0, 0, "text")])
    assert c.read_many() == []


# -- seeing a sleeping consumer (Engine.make_way) --------------------------------------
def test_consumer_parked_shows_a_consumer_asleep_on_its_ring_until_woken():
    mem = mmap.mmap(-1, 1 << 16)
    producer = Ring(mem, format=True)  # no doorbell: the ring's own park word
    consumer = Ring(mem)
    assert not producer.consumer_parked and not any_consumer_parked([producer])

    def consume():
        c = Ring(mem)
        c.wait(timeout=10.0)  # parks: nothing is published yet
        os._exit(0 if c.read_many() == [(5, 1, 2, b"x")] else 1)

    pid = _child(consume)
    deadline = time.monotonic() + 10
    while not producer.consumer_parked and time.monotonic() < deadline:
        time.sleep(0.001)
    assert producer.consumer_parked
    assert any_consumer_parked([Ring(mmap.mmap(-1, 1 << 16), format=True), producer])
    assert producer.push(5, 1, 2, b"x")  # publishing wakes it
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not producer.consumer_parked
    assert consumer.read_many() == [(5, 1, 2, b"x")]  # (the record is still there)


def test_any_consumer_parked_takes_a_list_of_rings():
    assert not any_consumer_parked([])
    with pytest.raises(TypeError):
        any_consumer_parked([object()])


def test_pause_without_gil_lets_other_threads_run():
    done = threading.Event()
    counts = []

    def count():
        n = 0
        while not done.is_set():
            n += 1
        counts.append(n)

    t = threading.Thread(target=count)
    t.start()
    time.sleep(0.05)  # the counter runs
    before = time.thread_time()
    started = time.monotonic()
    pause_without_gil(0.2)
    took = time.monotonic() - started
    used = time.thread_time() - before
    done.set()
    t.join()
    assert took >= 0.19
    assert used < 0.1  # it slept: it did not spin holding the GIL
    assert counts[0] > 0


def test_pause_without_gil_is_not_cut_short_by_a_signal_and_defers_its_handler():
    class Boom(Exception):
        pass

    seen = []

    def handler(signum, frame):
        seen.append(time.monotonic())
        raise Boom

    old = signal.signal(signal.SIGALRM, handler)
    try:
        started = time.monotonic()
        signal.setitimer(signal.ITIMER_REAL, 0.02)
        with pytest.raises(Boom):
            pause_without_gil(0.2)
            for _ in range(1000):  # the handler runs here, once Python code runs again
                pass
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    # the signal came after 20 ms; the pause ran its whole 200 ms before the handler
    assert seen and seen[0] - started >= 0.19
