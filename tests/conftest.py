import time

import pytest

from jobengine import Manager


def wait_for(predicate, timeout=10.0, interval=0.005):
    """Poll until predicate() is true; fail the test with a clear message otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s: {predicate}")


def all_workers_up(m):
    return lambda: len([w for w in m.workers if w.pid]) == m.num_workers


@pytest.fixture
def mgr():
    """A started two-worker manager whose workers are all up, stopped after the test."""
    m = Manager(num_workers=2).start()
    try:
        wait_for(all_workers_up(m))
        yield m
    finally:
        m.stop()
