"""`python -m jobengine demo`: a CPU-heavy batch with mixed priorities on every core.

Shows the engine doing its job: jobs of three priorities (high ones finish first), a
flaky kind that succeeds on retry, one that always fails, and a live progress line.
Ends with a table: throughput, speedup over running the same jobs serially in one
process (measured on a sample, here, in this run), and the count per final state.

Owns: the demo's jobs and its report.  Never does: anything a user's program could not
do with the public API."""

from __future__ import annotations

import os
import random
import sys
import time
from collections import Counter

from . import Job, Manager, State


def count_primes(limit: int) -> int:
    """CPU-bound work: primes below `limit`, by trial division."""
    count = 0
    for n in range(2, limit):
        i = 2
        while i * i <= n:
            if n % i == 0:
                break
            i += 1
        else:
            count += 1
    return count


def flaky(limit: int, ji) -> int:
    """Fails on its first attempt, succeeds on the retry."""
    if ji.attempt == 1:
        raise RuntimeError("transient failure (retried)")
    ji.info("second attempt succeeded")
    return count_primes(limit)


def broken(limit: int) -> int:
    raise ValueError(f"bad input {limit} (fails every time)")


def _progress(done: int, total: int, t0: float, by_prio: dict[int, int], width: int = 30) -> str:
    filled = int(width * done / total)
    rate = done / max(time.perf_counter() - t0, 1e-9)
    prios = "  ".join(f"p{p}:{n}" for p, n in sorted(by_prio.items(), reverse=True))
    bar = "#" * filled + "." * (width - filled)
    return f"[{bar}] {done}/{total} done  {rate:6.1f} jobs/s  left by priority {prios}"


def run(jobs: int = 300, workers: int | None = None, limit: int = 12_000, seed: int = 1) -> dict:
    workers = workers or os.cpu_count() or 1
    rng = random.Random(seed)
    tty = sys.stdout.isatty()

    # Serial baseline, measured here: a sample of the same work in this process.
    sample = max(4, jobs // 20)
    t = time.perf_counter()
    for _ in range(sample):
        count_primes(limit)
    serial_per_job = (time.perf_counter() - t) / sample

    prime_job = Job("count-primes", count_primes, description="CPU-bound trial division")
    flaky_job = Job("flaky", flaky, max_retries=2)
    broken_job = Job("broken", broken, max_retries=1)
    print(f"jobengine demo: {jobs} CPU-bound jobs on {workers} worker processes "
          f"(serial: {serial_per_job * 1e3:.1f} ms per job)")  # fmt: skip

    with Manager(num_workers=workers) as mgr:
        t_start = time.perf_counter()
        while len([w for w in mgr.workers if w.pid]) < workers:  # pool start-up, timed apart
            time.sleep(0.005)
        startup = time.perf_counter() - t_start
        t0 = time.perf_counter()
        instances = []
        for i in range(jobs):
            prio = rng.choice([0, 0, 0, 5, 5, 10])
            if i % 50 == 7:
                instances.append(mgr.schedule_job(flaky_job, args=(limit,), priority=prio))
            elif i % 100 == 42:
                instances.append(mgr.schedule_job(broken_job, args=(limit,), priority=prio))
            else:
                instances.append(mgr.schedule_job(prime_job, args=(limit,), priority=prio))
        last_print = 0.0
        while True:
            pending = [ji for ji in instances if not ji.done()]
            done = jobs - len(pending)
            now = time.perf_counter()
            if tty or now - last_print >= 1.0 or not pending:
                by_prio = Counter(ji.priority for ji in pending)
                line = _progress(done, jobs, t0, by_prio)
                print(
                    ("\r" + line) if tty else line, end="" if tty and pending else "\n", flush=True
                )
                last_print = now
            if not pending:
                break
            time.sleep(0.1)
        wall = time.perf_counter() - t0
        first_done = {p: min(ji.completed_at for ji in instances if ji.priority == p)
                      for p in {ji.priority for ji in instances}}  # fmt: skip

    finals = Counter(ji.state.name for ji in instances)
    ran = sum(1 for ji in instances if ji.state is not State.CANCELED)
    serial = serial_per_job * ran
    rows = [
        ("jobs", f"{jobs}"),
        ("workers", f"{workers}"),
        ("pool start-up", f"{startup * 1e3:.0f} ms (not in the times below)"),
        ("wall time", f"{wall:.2f} s"),
        ("throughput", f"{jobs / wall:.1f} jobs/s"),
        ("serial estimate", f"{serial:.2f} s ({serial_per_job * 1e3:.1f} ms x {ran})"),
        ("speedup over serial", f"{serial / wall:.2f}x on {workers} workers"),
    ]
    rows += [(f"final state {name}", str(n)) for name, n in sorted(finals.items())]
    order = sorted(first_done, key=lambda p: first_done[p])
    rows.append(("first finished, by priority", " then ".join(f"p{p}" for p in order)))
    w = max(len(k) for k, _ in rows)
    print()
    for k, v in rows:
        print(f"  {k:<{w}}  {v}")
    return {"wall": wall, "finals": finals, "speedup": serial / wall}
