"""Where the CPU goes in the CPU-bound rows (bench/PROFILE.md): N jobs of `us`
microseconds of fixed work (engine_workloads.burn) submitted at once on Manager(2) and
waited for, against the same work run serially here.  Prints the speedup and the CPU
time a job of each thread of the manager's process and of each child process (the
workers, the supervisor), from psutil (10 ms ticks: use >= 1 s of work).

    python bench/prof_burn.py US [SECONDS_OF_SERIAL_WORK]
"""

import sys
import threading
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

import engine_workloads as ew


def main(us: int, seconds: float) -> None:
    m = ew.started_manager(2)
    loops = int(us * ew.loops_per_us())
    n = int(seconds / (us * 1e-6))
    ew.jobengine_burn(m, 200, loops)  # warm
    me = psutil.Process()

    def snapshot() -> tuple[dict, dict]:
        threads = {t.id: t.user_time + t.system_time for t in me.threads()}
        children = {}
        for c in me.children(recursive=True):
            try:
                t = c.cpu_times()
                children[c.pid] = (c.name(), t.user + t.system)
            except psutil.Error:
                continue
        return threads, children

    serial = ew.serial_burn(n // 2, loops) * 2
    threads0, children0 = snapshot()
    took = ew.jobengine_burn(m, n, loops)
    threads1, children1 = snapshot()
    names = {t.native_id: t.name for t in threading.enumerate()}
    print(f"{us} us jobs, n={n}: serial {serial:.3f} s, ours {took:.3f} s, "
          f"speedup {serial / took:.2f}x (serial {serial / n * 1e6:.1f} us a job)")  # fmt: skip
    for tid, cpu in threads1.items():
        used = cpu - threads0.get(tid, 0.0)
        if used > 0.001:
            print(f"  thread {names.get(tid, tid)}: {used / n * 1e6:.1f} us a job")
    for pid, (name, cpu) in children1.items():
        used = cpu - children0.get(pid, (name, 0.0))[1]
        print(f"  {name} ({pid}): {used:.3f} s, {used / n * 1e6:.1f} us a job of all")
    m.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 2.0)
