"""Engine workloads for compare.py and the pytest-benchmark suites.

Every function returns seconds of wall time for the measured part only: pools and
managers are started (and their workers up) before the clock starts."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import statistics
import time

from jobengine import Manager


def noop(*_args):
    return None


def stamp(_=None):
    return time.time_ns()


def burn(loops: int) -> None:
    """A fixed amount of CPU work: unlike a clock-based spin, it does not stretch when
    another process takes the core, so a slowdown shows up as a slowdown."""
    for _ in range(loops):
        pass


def loops_per_us() -> float:
    """Calibrate burn() on this machine: iterations per microsecond (best of 5)."""
    n = 200_000
    best = min(_timed(burn, n) for _ in range(5))
    return n / (best * 1e6)


def _timed(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def started_manager(workers: int) -> Manager:
    m = Manager(num_workers=workers).start()
    deadline = time.monotonic() + 30
    while len([w for w in m.workers if w.pid]) < workers:
        if time.monotonic() > deadline:
            raise RuntimeError("workers did not start")
        time.sleep(0.005)
    m.submit(noop).result()  # ship the executor and warm both ends
    return m


# -- no-op throughput, per-job history on ------------------------------------------------
def jobengine_submit_noop(m: Manager, n: int) -> float:
    t = time.perf_counter()
    fs = [m.submit(noop) for _ in range(n)]
    for f in fs:
        f.result()
    return time.perf_counter() - t


def jobengine_registered_noop(m: Manager, n: int) -> float:
    """The go-job path: schedule_registered_job of a registered no-op, n times."""
    from jobengine import Job

    try:
        m.lookup_job("bench-noop")
    except KeyError:
        m.register_job(Job("bench-noop", noop))
    t = time.perf_counter()
    fs = [m.schedule_registered_job("bench-noop") for _ in range(n)]
    for f in fs:
        f.result()
    return time.perf_counter() - t


def ppe_submit_noop(ex: cf.ProcessPoolExecutor, n: int) -> float:
    t = time.perf_counter()
    fs = [ex.submit(noop) for _ in range(n)]
    for f in fs:
        f.result()
    return time.perf_counter() - t


def pool_imap_noop(pool, n: int, chunksize: int) -> float:
    t = time.perf_counter()
    for _ in pool.imap_unordered(noop, range(n), chunksize=chunksize):
        pass
    return time.perf_counter() - t


def jobengine_map_noop(m: Manager, n: int, chunksize: int) -> float:
    t = time.perf_counter()
    for _ in m.map(noop, range(n), chunksize=chunksize):
        pass
    return time.perf_counter() - t


# -- CPU-bound speedup ---------------------------------------------------------------
def serial_burn(n: int, loops: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        burn(loops)
    return time.perf_counter() - t


def jobengine_burn(m: Manager, n: int, loops: int) -> float:
    t = time.perf_counter()
    fs = [m.submit(burn, loops) for _ in range(n)]
    for f in fs:
        f.result()
    return time.perf_counter() - t


def ppe_burn(ex: cf.ProcessPoolExecutor, n: int, loops: int) -> float:
    t = time.perf_counter()
    fs = [ex.submit(burn, loops) for _ in range(n)]
    for f in fs:
        f.result()
    return time.perf_counter() - t


# -- latency -------------------------------------------------------------------------
def jobengine_latency(m: Manager, n: int, gap: float = 0.002) -> list[int]:
    """Schedule-to-start on an idle pool, in ns: time from the schedule call to the
    executor starting in a worker (its STARTED timestamp), one job at a time."""
    out = []
    for _ in range(n):
        time.sleep(gap)  # let every process go idle (park) between jobs
        t = time.time_ns()
        ji = m.submit(noop)
        ji.result()
        out.append(ji.processed_ns - t)
    return out


def jobengine_delayed_lateness(m: Manager, n: int, delay: float = 0.02) -> list[int]:
    """Due-time-to-start for delayed jobs on an idle pool, in ns: how late after its due
    time (schedule time + delay) the executor starts.  One job at a time."""
    out = []
    for _ in range(n):
        t = time.time_ns()
        ji = m.schedule_job(_delayed_job(m), schedule_after=delay)
        ji.result()
        out.append(ji.processed_ns - (t + int(delay * 1e9)))
    return out


def _delayed_job(m: Manager):
    from jobengine import Job

    try:
        return m.lookup_job("bench-delayed")
    except KeyError:
        return m.register_job(Job("bench-delayed", noop))


def ppe_latency(ex: cf.ProcessPoolExecutor, n: int, gap: float = 0.002) -> list[int]:
    out = []
    for _ in range(n):
        time.sleep(gap)
        t = time.time_ns()
        out.append(ex.submit(stamp).result() - t)
    return out


def percentile(values: list[int], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def new_pool(workers: int):
    pool = mp.get_context("fork").Pool(workers)
    pool.map(noop, range(workers * 4))
    return pool


def new_ppe(workers: int) -> cf.ProcessPoolExecutor:
    ex = cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("fork"))
    list(ex.map(noop, range(workers * 4)))
    return ex
