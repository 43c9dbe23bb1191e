"""The per-job profile's workload (bench/PROFILE.md): N no-op jobs submitted in a loop,
then waited for, on Manager(2) and the memory store.  Prints the rate and the CPU time
per job of the two busy threads of the manager's process, the submitting one and the
engine thread, and of its child processes together, the workers and the supervisor
(psutil, 10 ms ticks: use N >= 60,000): far less noisy than the rate on a shared
machine, for A/B comparisons.

    python bench/prof_submit.py [N]
    py-spy record -r 1000 -f raw -o sub.txt -- python bench/prof_submit.py [N]
"""

import sys
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

import engine_workloads as ew

from jobengine import Manager


def main(n: int) -> None:
    m = Manager(2).start()
    while len([w for w in m.workers if w.pid]) < 2:
        time.sleep(0.01)
    ew.jobengine_submit_noop(m, 5_000)  # warm
    engine = next(t for t in threading.enumerate() if t.name.startswith("jobengine-engine"))
    me = psutil.Process()

    def cpu() -> dict[int, float]:
        return {t.id: t.user_time + t.system_time for t in me.threads()}

    def children_cpu() -> float:  # the workers and the supervisor
        total = 0.0
        for c in me.children(recursive=True):
            try:
                t = c.cpu_times()
            except psutil.Error:
                continue
            total += t.user + t.system
        return total

    before, before_children = cpu(), children_cpu()
    t = time.perf_counter()
    fs = [m.submit(ew.noop) for _ in range(n)]
    for f in fs:
        f.result()
    dt = time.perf_counter() - t
    after, after_children = cpu(), children_cpu()
    per = {tid: (after[tid] - before.get(tid, 0.0)) / n * 1e6 for tid in after}
    print(
        f"N={n} wall={dt:.2f}s rate={n / dt / 1e3:.1f}k jobs/s "
        f"submit_us={per[threading.main_thread().native_id]:.2f} "
        f"engine_us={per[engine.native_id]:.2f} "
        f"children_us={(after_children - before_children) / n * 1e6:.2f}",
        flush=True,
    )
    m.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000)
