"""The per-job profile's workload (bench/PROFILE.md): N no-op jobs submitted in a loop,
then waited for, on Manager(2) and the memory store.

    py-spy record -r 1000 -f raw -o sub.txt -- python bench/prof_submit.py [N]
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import engine_workloads as ew

from jobengine import Manager


def main(n: int) -> None:
    m = Manager(2).start()
    while len([w for w in m.workers if w.pid]) < 2:
        time.sleep(0.01)
    ew.jobengine_submit_noop(m, 5_000)  # warm
    t = time.perf_counter()
    fs = [m.submit(ew.noop) for _ in range(n)]
    for f in fs:
        f.result()
    dt = time.perf_counter() - t
    print(f"N={n} wall={dt:.2f}s rate={n / dt / 1e3:.1f}k jobs/s", flush=True)
    m.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000)
