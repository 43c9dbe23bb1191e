"""Where the workers sleep in the CPU-bound rows (bench/PROFILE.md): N jobs of `us`
microseconds of fixed work (engine_workloads.burn) submitted in a loop on Manager(2),
then waited for, as compare.py runs them.  For the submit loop, the wait for the
results and the whole round, prints each worker's share of the wall time on a core,
waiting for one (the run queue) and asleep (parked on its empty task ring), from the
workers' /proc/<pid>/schedstat; and, for the round, the CPU a job of the engine
thread and of the submitting thread and the speedup against the same work run
serially here before it.

    python bench/prof_parked.py US [SECONDS_OF_SERIAL_WORK] [ROUNDS]
"""

import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import engine_workloads as ew


def _schedstat(path: str) -> tuple[int, int]:
    """(ns on a core, ns waiting for one) of a process or thread."""
    with open(path) as f:
        run, wait = f.read().split()[:2]
    return int(run), int(wait)


def _shares(before: list, after: list, wall: float) -> str:
    out = []
    for (r0, w0), (r1, w1) in zip(before, after, strict=True):
        run, wait = (r1 - r0) / 1e9 / wall, (w1 - w0) / 1e9 / wall
        out.append(f"on a core {run:.0%}, waiting {wait:.0%}, asleep {1 - run - wait:.1%}")
    return " | ".join(out)


def main(us: int, seconds: float, rounds: int) -> None:
    m = ew.started_manager(2)
    loops = int(us * ew.loops_per_us())
    n = int(seconds / (us * 1e-6))
    ew.jobengine_burn(m, 200, loops)  # warm: the dispatcher learns the job length
    engine = next(t for t in threading.enumerate() if t.name == "jobengine-engine").native_id
    me = threading.main_thread().native_id
    pids = [w.pid for w in m.workers]

    def workers() -> list:
        return [_schedstat(f"/proc/{pid}/schedstat") for pid in pids]

    speedups = []
    for r in range(rounds):
        serial = ew.serial_burn(n // 2, loops) * 2
        e0, m0 = _schedstat(f"/proc/self/task/{engine}/schedstat"), _schedstat(
            f"/proc/self/task/{me}/schedstat")  # fmt: skip
        w0, t0 = workers(), time.perf_counter()
        futures = [m.submit(ew.burn, loops) for _ in range(n)]
        w1, t1 = workers(), time.perf_counter()
        for f in futures:
            f.result()
        w2, t2 = workers(), time.perf_counter()
        e1, m1 = _schedstat(f"/proc/self/task/{engine}/schedstat"), _schedstat(
            f"/proc/self/task/{me}/schedstat")  # fmt: skip
        speedups.append(serial / (t2 - t0))
        print(f"round {r}: speedup {serial / (t2 - t0):.2f}x (serial {serial / n * 1e6:.0f} "
              f"us a job); engine thread {(e1[0] - e0[0]) / n / 1e3:.1f} us a job, "
              f"submitting thread {(m1[0] - m0[0]) / n / 1e3:.1f}")  # fmt: skip
        print(f"  submit loop {(t1 - t0) * 1e3:.0f} ms: {_shares(w0, w1, t1 - t0)}")
        print(f"  the rest    {(t2 - t1) * 1e3:.0f} ms: {_shares(w1, w2, t2 - t1)}")
        print(f"  round       {(t2 - t0) * 1e3:.0f} ms: {_shares(w0, w2, t2 - t0)}")
    print(f"median speedup {statistics.median(speedups):.2f}x")
    m.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 2.0,
         int(sys.argv[3]) if len(sys.argv) > 3 else 3)  # fmt: skip
