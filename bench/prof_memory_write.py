"""The memory store's batch write alone (_core.memory_write, bench/PROFILE.md): N new
instances written as the engine hands them over, in batches of B: first each one's
queued snapshot with its CREATED and SCHEDULED records, then its PROCESSING and
COMPLETED records with its final snapshot; retention at 10,000 as by default.  Prints
the nanoseconds a job of each kind of batch, medians of 7.

    python bench/prof_memory_write.py [N] [B]
"""

import statistics
import sys
import time
import uuid

from jobengine._core import RecordBuffer, memory_write
from jobengine.records import FINAL_STATES
from jobengine.state import State

QUEUED, RUNNING, DONE = State.SCHEDULED._value_, State.PROCESSING._value_, State.COMPLETED._value_
T0 = 1_800_000_000_000_000_000
NONE_RESULT = ("r", b"\x80\x05N.")  # what a worker sends for a None result


def _write(rows, finished, outcomes, logs, instances, records) -> float:
    t = time.perf_counter()
    memory_write(rows, finished, outcomes, instances, records, [], logs, FINAL_STATES,
                 None, 1 << 20, False, 10_000)  # fmt: skip
    return time.perf_counter() - t


def one_run(n: int, batch: int) -> tuple[float, float]:
    # The allocator warmed as in a running engine: without it the finishing batches'
    # first list rows pay for fresh memory pools (a build that makes fewer lists while
    # admitting then reads slower finishing, though it does the same work there).
    warm = [[None] * 24 for _ in range(n)]
    del warm
    rows, finished, outcomes, logs = {}, {}, {}, {}
    uids = [str(uuid.uuid4()) for _ in range(n)]
    admit = finish = 0.0
    for s in range(0, n, batch):
        part = list(enumerate(uids[s : s + batch], s))
        made = [T0 + i for i, _ in part]
        # (scheduled is created itself, as the recorder's snapshots() sends it)
        instances = [(u, "noop", QUEUED, 0, 0, c, c, None, None, None)
                     for (_, u), c in zip(part, made, strict=True)]  # fmt: skip
        records = RecordBuffer()
        for (_, u), c in zip(part, made, strict=True):
            records.created(u, "noop", c, 1)
        admit += _write(rows, finished, outcomes, logs, instances, records)
    for s in range(0, n, batch):
        part = list(enumerate(uids[s : s + batch], s))
        records = RecordBuffer()
        instances = []
        for i, u in part:
            records.append(u, "noop", RUNNING, T0 + i + 5, 1, 0, 1, None)
            records.append(u, "noop", DONE, T0 + i + 9, 1, 0, 1, None)
            instances.append((u, "noop", DONE, 0, 1, T0 + i, T0 + i, T0 + i + 5, T0 + i + 9,
                              NONE_RESULT))  # fmt: skip
        finish += _write(rows, finished, outcomes, logs, instances, records)
    return admit / n * 1e9, finish / n * 1e9


def main(n: int, batch: int) -> None:
    admit, finish = zip(*[one_run(n, batch) for _ in range(7)], strict=True)
    a, f = statistics.median(admit), statistics.median(finish)
    print(f"memory_write, {n:,} instances in batches of {batch}: "
          f"admission {a:.0f} ns a job, finishing {f:.0f}")  # fmt: skip


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000,
         int(sys.argv[2]) if len(sys.argv) > 2 else 500)  # fmt: skip
