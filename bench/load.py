"""Load: N queued no-op instances.  Prints JSON: memory per queued instance (the
manager's process RSS growth, store records included, and without them) and the
throughput of draining the queue.  Run in its own process by compare.py."""

from __future__ import annotations

import gc
import json
import sys
import time

import psutil

from jobengine import Job, Manager
from jobengine.stores.memory import MemoryStore


class _CountOnlyStore(MemoryStore):
    """Keeps nothing: isolates the manager's own memory from the store's."""

    def write_batch(self, instances, states, logs, token=None):
        pass

    def put_instances(self, batch):
        pass

    def append_states(self, batch):
        pass

    def append_logs(self, batch):
        pass


def noop():
    return None


def measure(n: int, store) -> tuple[float, float, float]:
    m = Manager(num_workers=2, store=store)
    job = m.register_job(Job("noop", noop))
    proc = psutil.Process()
    gc.collect()
    before = proc.memory_info().rss
    t = time.perf_counter()
    for _ in range(n):
        m.schedule_job(job)
    sched = time.perf_counter() - t
    m.lookup_instance_history("")  # flushes what waits for the store
    gc.collect()
    per = (proc.memory_info().rss - before) / n
    m.start()
    t = time.perf_counter()
    m.wait()
    drain = time.perf_counter() - t
    m.stop()
    return per, n / sched, n / drain


def main() -> None:
    n = int(sys.argv[1])
    mode = sys.argv[2]
    store = MemoryStore() if mode == "memory" else _CountOnlyStore()
    per, sched_rate, drain_rate = measure(n, store)
    print(
        json.dumps(
            {"bytes_per_instance": per, "schedule_rate": sched_rate, "drain_rate": drain_rate}
        )
    )


if __name__ == "__main__":
    main()
