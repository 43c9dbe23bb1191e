"""Workloads shared by the pytest-benchmark suites and bench/compare.py.

Each function runs one complete round and returns the number of operations it did, so
callers can report time per operation.  Peers and jobengine run the same key stream.
"""

from __future__ import annotations

import heapq
import queue
import random
from array import array

from jobengine._core import PRIORITY_MAX, Heap


def make_keys(n: int, seed: int = 1) -> list[int]:
    """n keys shaped like scheduler keys: a random priority over a FIFO sequence."""
    rng = random.Random(seed)
    return [(rng.randrange(PRIORITY_MAX) << 44) | i for i in range(n)]


def core_per_call(keys: list[int]) -> int:
    h = Heap()
    push, pop = h.push, h.pop
    for k in keys:
        push(k)
    for _ in range(len(keys)):
        pop()
    return len(keys)


def core_batch(keys: array) -> int:
    h = Heap()
    h.push_many(keys)
    h.pop_many(len(keys))
    return len(keys)


def heapq_tuples(keys: list[int]) -> int:
    """The idiomatic pure-Python priority queue: (priority, seq, obj) tuples."""
    h: list = []
    push, pop = heapq.heappush, heapq.heappop
    obj = object()
    for seq, k in enumerate(keys):
        push(h, (k >> 44, seq, obj))
    for _ in range(len(keys)):
        pop(h)
    return len(keys)


def priority_queue(keys: list[int]) -> int:
    q: queue.PriorityQueue = queue.PriorityQueue()
    put, get = q.put, q.get
    obj = object()
    for seq, k in enumerate(keys):
        put((k >> 44, seq, obj))
    for _ in range(len(keys)):
        get()
    return len(keys)


def ring_cross_process(n: int) -> float:
    """Seconds to move n small records from a forked Python producer to this process
    through one shared-memory ring (push per record; the consumer reads in batches)."""
    import mmap
    import os
    import time

    from jobengine._core import Doorbell, Ring

    mem, bell_mem = mmap.mmap(-1, 1 << 20), mmap.mmap(-1, 64)
    bell = Doorbell(bell_mem, format=True)
    consumer = Ring(mem, bell, format=True)
    pid = os.fork()
    if pid == 0:
        try:
            producer = Ring(mem, Doorbell(bell_mem))
            payload = b"x" * 32
            for i in range(n):
                while not producer.push(1, i, 0, payload):
                    pass
        finally:
            os._exit(0)
    t = time.perf_counter()
    got = 0
    while got < n:
        bell.wait([consumer], timeout=5.0, spin=20e-6)
        got += len(consumer.read_many())
    elapsed = time.perf_counter() - t
    os.waitpid(pid, 0)
    return elapsed
