"""The garbage collector's cost of the Futures a caller holds (bench/PROFILE.md): a full
collection with N Instances alive (their uuid, timestamps and worker set as a finished
job's are), median of 15.  The collector's walk of an Instance visits only the members
that can hold a cycle (_core.pyx: _instance_traverse).

    python bench/prof_collect.py [N]
"""

import gc
import statistics
import sys
import time

from jobengine import Job
from jobengine.instance import Instance


def noop() -> None:
    pass


def main(n: int) -> None:
    job = Job("collect", noop)
    t0 = 1_800_000_000_000_000_000
    held = []
    for k in range(n):
        inst = Instance(None, job, k + 1, (), {}, 0, t0 + k)
        inst.processed_ns, inst.completed_ns = t0 + k + 5, t0 + k + 9
        inst.started_mono, inst.worker = 10**12 + k, k & 1
        held.append(inst)
    times = []
    for _ in range(15):
        t = time.perf_counter()
        gc.collect()
        times.append(time.perf_counter() - t)
    print(f"full collection with {n:,} Instances held: {statistics.median(times) * 1e3:.1f} ms")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000)
