"""pytest-benchmark suites for the engine, side by side with its peers (group = workload).

Run: python -m pytest bench --benchmark-enable --benchmark-group-by=group
Pools and managers start once per module; each round is a batch of jobs."""

import engine_workloads as ew
import pytest

N = 5_000


@pytest.fixture(scope="module")
def manager():
    m = ew.started_manager(2)
    yield m
    m.stop()


@pytest.fixture(scope="module")
def ppe():
    ex = ew.new_ppe(2)
    yield ex
    ex.shutdown()


@pytest.fixture(scope="module")
def pool():
    p = ew.new_pool(2)
    yield p
    p.terminate()


def _bench(benchmark, group, fn, *args):
    benchmark.group = group
    benchmark.extra_info["jobs"] = N
    benchmark.pedantic(fn, args=args, rounds=5, iterations=1, warmup_rounds=1)


def test_noop_jobengine_submit(benchmark, manager):
    _bench(benchmark, "no-op jobs x5000", ew.jobengine_submit_noop, manager, N)


def test_noop_ppe_submit(benchmark, ppe):
    _bench(benchmark, "no-op jobs x5000", ew.ppe_submit_noop, ppe, N)


def test_noop_pool_imap_cs1(benchmark, pool):
    _bench(benchmark, "no-op jobs x5000", ew.pool_imap_noop, pool, N, 1)


def test_map_jobengine_cs256(benchmark, manager):
    _bench(benchmark, "map x50000", ew.jobengine_map_noop, manager, 10 * N, 256)


def test_map_pool_imap_cs256(benchmark, pool):
    _bench(benchmark, "map x50000", ew.pool_imap_noop, pool, 10 * N, 256)
