"""The compiled submit alone (bench/PROFILE.md, "The compiled submit"): N calls of
`submit(burn, 3200)` on Manager(1) while its one worker runs a long job, so every call
takes the compiled path (`ShortPath`) and none deals it to a worker; prints the CPU
time a call of the submitting thread, the median of the rounds and their range.

    python bench/prof_submit_call.py [N] [ROUNDS]
    valgrind --tool=callgrind --trace-children=no python bench/prof_submit_call.py 3000 1
      (then callgrind_annotate --inclusive=yes: ShortPath__admit's instructions / N;
      the workers are started by exec, so only the manager's process is measured)
"""

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import engine_workloads as ew

from jobengine import Manager


def main(n: int, rounds: int) -> None:
    m = Manager(1).start()
    m.submit(ew.burn, 10).result(timeout=60)  # the job exists: compiled from now on
    busy = m.submit(ew.burn, 320_000_000)  # the worker busy throughout (~10 s here)
    while not busy.running():
        time.sleep(0.01)
    per_call = []
    for _ in range(rounds):
        t = time.thread_time_ns()
        futures = [m.submit(ew.burn, 3200) for _ in range(n)]
        per_call.append((time.thread_time_ns() - t) / n)
        del futures
    print(f"{statistics.median(per_call):.0f} ns of CPU a submit "
          f"(rounds {min(per_call):.0f}-{max(per_call):.0f})")  # fmt: skip
    sys.stdout.flush()
    os._exit(0)  # (not waiting for the busy worker and the queue behind it)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000,
         int(sys.argv[2]) if len(sys.argv) > 2 else 5)  # fmt: skip
