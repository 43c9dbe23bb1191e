"""The worker's own cost a job (bench/PROFILE.md), in this process: Worker._run_task
for N no-op tasks of one argument (STARTED, unpickle, call, pickle, OK), the events
read from the manager's end every 256 tasks, as the engine drains them.  Prints ns a
job, the median of the rounds and their range.

    python bench/prof_worker.py [N] [ROUNDS]
"""

import os
import pickle
import statistics
import sys
import time

import cloudpickle

from jobengine.pool.channel import Channel, new_doorbell
from jobengine.pool.worker import Worker


def noop(*_args):
    return None


def main(n: int, rounds: int) -> None:
    _fd, _mm, bell = new_doorbell()
    manager = Channel.create("prof-worker", bell)
    # Worker() as a worker process makes it (its SIGUSR1 handler, the logging bridge:
    # harmless in this short-lived process)
    w = Worker(0, Channel(manager.fd, bell, "worker"), os.getppid())
    blob = ("noop", __name__, None, None, cloudpickle.dumps(noop))
    w._define(1, pickle.dumps(blob, protocol=5))  # noqa: SLF001 - what T_DEFINE runs
    payload = pickle.dumps(((1,), {}), protocol=5)
    events = w.channel.events
    per_job = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for i in range(n):
            w._run_task(i + 1 | 1 << 32, 1, payload)  # noqa: SLF001 - one task, as run() does
            if i & 255 == 255:
                events.publish()
                manager.events.read_many(1024)
        per_job.append((time.perf_counter_ns() - start) / n)
        events.publish()
        manager.events.read_many(1 << 20)
    print(f"worker: {statistics.median(per_job):.0f} ns a job "
          f"(rounds {min(per_job):.0f}-{max(per_job):.0f})")  # fmt: skip


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000,
         int(sys.argv[2]) if len(sys.argv) > 2 else 9)  # fmt: skip
