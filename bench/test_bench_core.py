"""pytest-benchmark suites for the compiled heap, side by side with its peers.

Run: python -m pytest bench --benchmark-enable --benchmark-group-by=group
Each benchmark does one full round of n pushes then n pops."""

from array import array

import pytest
from workloads import core_batch, core_per_call, heapq_tuples, make_keys, priority_queue

SIZES = [1_000, 100_000, 1_000_000]


@pytest.fixture(scope="module", params=SIZES, ids=lambda n: f"n={n:.0e}")
def keys(request):
    return make_keys(request.param)


def _run(benchmark, fn, data, n):
    rounds = 1 if n >= 1_000_000 else (5 if n >= 100_000 else 200)
    benchmark.extra_info["n"] = n
    benchmark.pedantic(fn, args=(data,), rounds=rounds, iterations=1, warmup_rounds=1)


def test_core_per_call(benchmark, keys):
    benchmark.group = f"push+pop n={len(keys)}"
    _run(benchmark, core_per_call, keys, len(keys))


def test_core_batch(benchmark, keys):
    benchmark.group = f"push+pop n={len(keys)}"
    _run(benchmark, core_batch, array("Q", keys), len(keys))


def test_heapq_tuples(benchmark, keys):
    benchmark.group = f"push+pop n={len(keys)}"
    _run(benchmark, heapq_tuples, keys, len(keys))


def test_priority_queue(benchmark, keys):
    benchmark.group = f"push+pop n={len(keys)}"
    _run(benchmark, priority_queue, keys, len(keys))
