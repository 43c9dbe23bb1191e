"""Jobs/s through one Redis: jobengine's shared queue against Huey, Dramatiq and RQ.

Each system runs no-op jobs (peer_tasks.noop) on two consumer processes of two workers
each (jobengine: two managers with 2 workers; Huey: two `huey_consumer -k process -w 2`;
Dramatiq: two `dramatiq -p 2`; RQ: four `rq worker` with SimpleWorker, which runs a job
without forking, RQ's fastest) on the Redis at JOBENGINE_REDIS_URL:

- pre-filled: the queue holds the jobs before the consumers start; the rate from the
  moment the first job leaves the queue until it is drained (what starting the
  consumers costs is not counted against anyone);
- end to end: consumers running and warm; the time from the first enqueue (by this
  process, one call per job, or one map() for jobengine) until the queue is drained.

Drained means: jobengine, every entry finished (its final record written);
Huey, its queue empty; Dramatiq, every message acknowledged; RQ, its queue and its
started-job registry empty.  Used by compare.py's "queue" section; run alone with
`python bench/queue_bench.py [--quick]`.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
URL = os.environ.get("JOBENGINE_REDIS_URL", "redis://127.0.0.1:6379/0")
NS = "bench_queue"
CONSUMERS = 2  # processes per system, 2 workers each


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(HERE.parent)]))


def _spawn(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=HERE, env=_env(), stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _until(done: Callable[[], bool], timeout: float = 600.0) -> float:
    end = time.monotonic() + timeout
    while not done():
        if time.monotonic() > end:
            raise TimeoutError("the queue was not drained in time")
        time.sleep(0.002)
    return time.perf_counter()


class System:
    """One queue: fill(n) enqueues n no-op jobs, start() launches its consumers,
    drained() says whether everything enqueued has run."""

    name = ""

    def reset(self) -> None: ...
    def fill(self, n: int) -> None: ...
    def start(self) -> list[subprocess.Popen]: ...
    def remaining(self) -> int: ...
    def close(self) -> None: ...

    def drained(self) -> bool:
        return self.remaining() == 0


class JobEngine(System):
    name = "jobengine"

    def __init__(self, url: str = URL) -> None:
        from jobengine import Manager, open_store

        self.url = url
        self.store = open_store(url, namespace=NS)
        self.producer = Manager(0, store=self.store).start()
        self.worker = (
            "import sys\n"
            "from jobengine import Manager, open_store\n"
            f"m = Manager(2, store=open_store({url!r}, namespace={NS!r})).start()\n"
            "sys.stdin.read()\n"
            "m.stop()\n"
        )

    def reset(self) -> None:
        self.store.clear()

    def fill(self, n: int) -> None:
        import peer_tasks

        self.producer.map(peer_tasks.noop, range(n))  # returns once all are in Redis

    def start(self) -> list[subprocess.Popen]:
        return [_spawn([sys.executable, "-c", self.worker]) for _ in range(CONSUMERS)]

    def remaining(self) -> int:
        return self.store.queue_length()

    def close(self) -> None:
        self.producer.stop()
        self.store.clear()


class Huey(System):
    name = "Huey"

    def __init__(self) -> None:
        import peer_tasks

        self.huey = peer_tasks.huey
        self.task = peer_tasks.huey_noop

    def reset(self) -> None:
        self.huey.flush()

    def fill(self, n: int) -> None:
        for i in range(n):
            self.task(i)

    def start(self) -> list[subprocess.Popen]:
        cmd = [str(Path(sys.executable).with_name("huey_consumer")), "peer_tasks.huey",
               "-k", "process", "-w", "2", "-n", "-d", "0.01", "-m", "0.1"]  # fmt: skip
        return [_spawn(cmd) for _ in range(CONSUMERS)]

    def remaining(self) -> int:
        return self.huey.pending_count()


class Dramatiq(System):
    name = "Dramatiq"

    def __init__(self) -> None:
        import peer_tasks
        import redis

        self.actor = peer_tasks.dramatiq_noop
        self.broker = self.actor.broker
        self.r = redis.Redis.from_url(URL)

    def reset(self) -> None:
        self.broker.flush_all()

    def fill(self, n: int) -> None:
        for i in range(n):
            self.actor.send(i)

    def start(self) -> list[subprocess.Popen]:
        cmd = [str(Path(sys.executable).with_name("dramatiq")), "peer_tasks", "-p", "2"]
        return [_spawn(cmd) for _ in range(CONSUMERS)]

    def remaining(self) -> int:  # a message leaves the .msgs hash when it is acknowledged
        return self.r.hlen("dramatiq:jobengine_bench.msgs")


class RQ(System):
    name = "RQ"

    def __init__(self) -> None:
        import redis
        from rq import Queue
        from rq.registry import StartedJobRegistry

        self.r = redis.Redis.from_url(URL)
        self.q = Queue("jobengine_bench", connection=self.r)
        self.started = StartedJobRegistry(queue=self.q)

    def reset(self) -> None:
        self.q.empty()

    def fill(self, n: int) -> None:
        import peer_tasks

        for i in range(n):
            self.q.enqueue(peer_tasks.noop, i)

    def start(self) -> list[subprocess.Popen]:
        cmd = [str(Path(sys.executable).with_name("rq")), "worker", "-w", "rq.worker.SimpleWorker",
               "--url", URL, "jobengine_bench"]  # fmt: skip
        return [_spawn(cmd) for _ in range(2 * CONSUMERS)]  # RQ: one job at a time each

    def remaining(self) -> int:
        return self.q.count + self.started.count


def prefilled(system: System, n: int) -> float:
    """jobs/s draining a pre-filled queue of n, from the first job taken to the last."""
    system.reset()
    system.fill(n)
    procs = system.start()
    try:
        while (left := system.remaining()) >= n:
            time.sleep(0.001)
        t0 = time.perf_counter()
        return left / (_until(system.drained) - t0)
    finally:
        _stop(procs)


def end_to_end(system: System, n: int) -> float:
    """Seconds from the first enqueue of n jobs to a drained queue, consumers warm."""
    system.reset()
    procs = system.start()
    try:
        system.fill(50)  # warm: consumers up, code imported
        _until(system.drained)
        t0 = time.perf_counter()
        system.fill(n)
        return _until(system.drained) - t0
    finally:
        _stop(procs)


def measure(quick: bool) -> dict[str, dict[str, float]]:
    """jobs/s per system: {"name": {"prefilled": rate, "end_to_end": rate}}, medians of
    rounds interleaved across systems."""
    sizes = {"jobengine": 20_000, "Huey": 20_000, "Dramatiq": 5_000, "RQ": 1_000}
    if quick:
        sizes = {k: max(500, v // 4) for k, v in sizes.items()}
    rounds = 1 if quick else 3
    systems: list[System] = []
    for cls in (JobEngine, Huey, Dramatiq, RQ):
        try:
            systems.append(cls())
        except Exception as e:  # a peer that is not installed: pip install 'jobengine[bench]'
            print(f"  {cls.name}: not measured ({type(e).__name__}: {e})", file=sys.stderr)
    runs: dict[str, dict[str, list[float]]] = {s.name: {"prefilled": [], "end_to_end": []}
                                               for s in systems}  # fmt: skip
    try:
        for r in range(rounds):
            for s in systems if r % 2 == 0 else list(reversed(systems)):
                n = sizes[s.name]
                runs[s.name]["prefilled"].append(prefilled(s, n))
                runs[s.name]["end_to_end"].append(n / end_to_end(s, n))
                print(f"  round {r + 1}: {s.name} {runs[s.name]}", file=sys.stderr, flush=True)
    finally:
        for s in systems:
            s.close()
    return {name: {k: statistics.median(v) for k, v in d.items()} for name, d in runs.items()}


def durable_prefilled(quick: bool) -> dict[str, float]:
    """jobengine's pre-filled rate on SQLite (one machine) and PostgreSQL, as above."""
    import tempfile

    out = {}
    urls = {
        "SQLite": f"sqlite:///{tempfile.mkdtemp()}/queue.db",
        "PostgreSQL": os.environ.get("JOBENGINE_POSTGRES_DSN",
                                     "postgresql://postgres@127.0.0.1:5432/test"),
    }  # fmt: skip
    for name, url in urls.items():
        try:
            system = JobEngine(url)
        except Exception as e:  # a server that is not running here
            print(f"  {name}: not measured ({e})", file=sys.stderr)
            continue
        try:
            n = 5_000 if quick else 20_000
            out[name] = statistics.median(prefilled(system, n) for _ in range(1 if quick else 3))
        finally:
            system.close()
    return out


if __name__ == "__main__":
    for name, rates in measure("--quick" in sys.argv).items():
        print(f"{name:10s} pre-filled {rates['prefilled']:9,.0f} jobs/s   "
              f"end to end {rates['end_to_end']:9,.0f} jobs/s")  # fmt: skip
