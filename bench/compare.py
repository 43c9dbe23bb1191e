"""Print every speed target of DESIGN.md §4 that exists so far, measured side by side.

Each row runs jobengine and its peer in the same process, interleaved round by round,
and reports medians and their ratio: absolute times on a shared machine are noise, the
ratio measured in one run is the figure that holds.

    python bench/compare.py            # full table (about a minute)
    python bench/compare.py --quick    # smaller sizes, fewer rounds
    python bench/compare.py --markdown # the table as Markdown, for the README
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import engine_workloads as ew
from workloads import (
    core_batch,
    core_per_call,
    heapq_tuples,
    make_keys,
    priority_queue,
    ring_cross_process,
)


@dataclass
class Row:
    what: str
    peer: str
    peer_figure: str
    ours: str
    ratio: float | None  # ours vs peer, > 1 means jobengine is better
    goal: str
    met: bool | None  # None: informational row, no target at this size

    def verdict(self) -> str:
        return {True: "met", False: "MISSED", None: "info"}[self.met]


def _time(fn: Callable, arg) -> float:
    gc.collect()
    t = time.perf_counter()
    fn(arg)
    return time.perf_counter() - t


def median_pair(ours: Callable, ours_arg, peer: Callable, peer_arg, rounds: int):
    """Medians of ours and peer, alternating which goes first each round."""
    a, b = [], []
    for r in range(rounds):
        if r % 2:
            b.append(_time(peer, peer_arg))
            a.append(_time(ours, ours_arg))
        else:
            a.append(_time(ours, ours_arg))
            b.append(_time(peer, peer_arg))
    return statistics.median(a), statistics.median(b)


def _ns(seconds: float, n: int) -> str:
    return f"{seconds / n * 1e9:,.0f} ns/pair"


def _rate(seconds: float, n: int) -> str:
    return f"{n / seconds / 1e6:.2f} M pairs/s"


def core_rows(quick: bool) -> list[Row]:
    sizes = [1_000, 100_000] if quick else [1_000, 100_000, 1_000_000]
    target_size = sizes[-1]
    rows = []
    for n in sizes:
        keys = make_keys(n)
        rounds = 3 if n >= 1_000_000 else (5 if n >= 100_000 else 21)
        reps = max(1, 20_000 // n)  # small sizes: repeat inside a round for resolution

        def many(fn, reps=reps):
            return lambda arg: [fn(arg) for _ in range(reps)]

        per_call, hq = median_pair(many(core_per_call), keys, many(heapq_tuples), keys, rounds)
        judged = n == target_size
        ratio = hq / per_call
        rows.append(
            Row(
                f"heap push+pop per call, n={n:.0e}",
                "heapq (prio, seq, obj)",
                _rate(hq / reps, n),
                _rate(per_call / reps, n),
                ratio,
                ">= 4x",
                ratio >= 4 if judged else None,
            )
        )
        per_call2, pq = median_pair(
            many(core_per_call), keys, many(priority_queue), keys, max(3, rounds // 3)
        )
        ratio = pq / per_call2
        rows.append(
            Row(
                f"heap push+pop per call, n={n:.0e}",
                "queue.PriorityQueue",
                _rate(pq / reps, n),
                _rate(per_call2 / reps, n),
                ratio,
                ">= 15x",
                ratio >= 15 if judged else None,
            )
        )
        ka = array("Q", keys)
        batch, hq2 = median_pair(many(core_batch), ka, many(heapq_tuples), keys, rounds)
        ns = batch / reps / n * 1e9
        rows.append(
            Row(
                f"heap push_many+pop_many, n={n:.0e}",
                "heapq (prio, seq, obj)",
                _ns(hq2 / reps, n),
                f"{ns:,.0f} ns/pair",
                hq2 / batch,
                "<= 60 ns/pair",
                ns <= 60,
            )
        )
    n = 200_000
    sec = statistics.median(ring_cross_process(n) for _ in range(3))
    rows.append(
        Row("ring: records between two Python processes", "-", "-",
            f"{n / sec / 1e3:,.0f} k records/s", None, "", None)
    )  # fmt: skip
    return rows


def _median_runs(fn, rounds: int) -> float:
    return statistics.median(fn() for _ in range(rounds))


def engine_rows(quick: bool) -> list[Row]:
    import os

    workers = os.cpu_count() or 1
    n = 5_000 if quick else 20_000
    rounds = 3 if quick else 5
    rows = []
    m = ew.started_manager(workers)
    ex = ew.new_ppe(workers)
    pool = ew.new_pool(workers)
    try:
        ours, ppe = [], []
        imap1, registered = [], []
        runs = [
            (ours, lambda: ew.jobengine_submit_noop(m, n)),
            (ppe, lambda: ew.ppe_submit_noop(ex, n)),
            (imap1, lambda: ew.pool_imap_noop(pool, n, 1)),
            (registered, lambda: ew.jobengine_registered_noop(m, n)),
        ]
        for r in range(rounds):  # interleaved rounds, every other one in reverse order:
            # a run right after another pool's may share the cores with its wind-down
            for out, run in runs if r % 2 == 0 else runs[::-1]:
                out.append(run())
        o, p, i1, reg = (statistics.median(x) for x in (ours, ppe, imap1, registered))
        rate = lambda sec: f"{n / sec / 1e3:,.1f} k jobs/s"  # noqa: E731
        rows.append(
            Row(
                "no-op jobs, history on (memory store)",
                "ProcessPoolExecutor.submit",
                rate(p),
                rate(o),
                p / o,
                ">= 10x",
                p / o >= 10,
            )
        )
        rows.append(
            Row(
                "no-op jobs, history on (memory store)",
                "Pool.imap_unordered(cs=1)",
                rate(i1),
                rate(o),
                i1 / o,
                ">= 2x",
                i1 / o >= 2,
            )
        )
        rows.append(
            Row(
                "no-op jobs via schedule_registered_job (memory store)",
                "ProcessPoolExecutor.submit",
                rate(p),
                rate(reg),
                p / reg,
                ">= 10x",
                p / reg >= 10,
            )
        )

        big = 50_000 if quick else 200_000
        best_peer = min(
            (_median_runs(lambda c=c: ew.pool_imap_noop(pool, big, c), rounds), c)
            for c in (64, 256, 1024)
        )
        best_ours = min(
            (_median_runs(lambda c=c: ew.jobengine_map_noop(m, big, c), rounds), c)
            for c in (64, 256, 1024)
        )
        rate2 = lambda sec: f"{big / sec / 1e6:.2f} M calls/s"  # noqa: E731
        r = best_peer[0] / best_ours[0]
        rows.append(
            Row(
                f"mgr.map no-op (best chunksize: {best_ours[1]})",
                f"Pool.imap_unordered (best cs: {best_peer[1]})",
                rate2(best_peer[0]),
                rate2(best_ours[0]),
                r,
                ">= 0.5x",
                r >= 0.5,
            )
        )

        per_us = ew.loops_per_us()
        for us, goal in ((1000, 0.95), (100, 0.85)):
            loops = int(us * per_us)
            jobs = int((0.6 if quick else 2.0) / (us * 1e-6))
            # The serial run is the rows' peer too: each round runs it beside both pools
            # (in alternating order, as above) and each speedup is against the serial
            # run of its own round, so a slow or fast moment of the host moves both
            # sides of a ratio (the serial time moved 75-118 us a job within minutes).
            serial_t, ours_t, ppe_t = [], [], []
            burns = [
                (serial_t, lambda j=jobs, lp=loops: ew.serial_burn(j, lp)),
                (ours_t, lambda j=jobs, lp=loops: ew.jobengine_burn(m, j, lp)),
                (ppe_t, lambda j=jobs, lp=loops: ew.ppe_burn(ex, j, lp)),
            ]
            for r in range(rounds):
                for out, run in burns if r % 2 == 0 else burns[::-1]:
                    out.append(run())
            sp_ours = statistics.median(s / t for s, t in zip(serial_t, ours_t, strict=True))
            sp_ppe = statistics.median(s / t for s, t in zip(serial_t, ppe_t, strict=True))
            rows.append(
                Row(
                    f"CPU-bound speedup, {us} us jobs, {workers} cores",
                    "ProcessPoolExecutor",
                    f"{sp_ppe:.2f}x",
                    f"{sp_ours:.2f}x",
                    sp_ours / sp_ppe,
                    f">= {goal * workers:.2f}x",
                    sp_ours >= goal * workers,
                )
            )

        lat_n = 200 if quick else 1000
        ours_lat = ew.jobengine_latency(m, lat_n)
        ppe_lat = ew.ppe_latency(ex, lat_n)
        for q, goal_us in ((50, 50), (99, 500)):
            a, b = ew.percentile(ours_lat, q) / 1e3, ew.percentile(ppe_lat, q) / 1e3
            rows.append(
                Row(
                    f"schedule -> start latency p{q}, idle pool",
                    "ProcessPoolExecutor",
                    f"{b:,.0f} us",
                    f"{a:,.0f} us",
                    b / a,
                    f"<= {goal_us} us",
                    a <= goal_us,
                )
            )
        late = ew.jobengine_delayed_lateness(m, 60 if quick else 200)
        for q, goal_ms in ((50, 1), (99, 5)):
            a = ew.percentile(late, q) / 1e6
            rows.append(
                Row(
                    f"delayed job: due time -> start p{q}, idle pool",
                    "-",
                    "-",
                    f"{a:.2f} ms",
                    None,
                    f"<= {goal_ms} ms",
                    a <= goal_ms,
                )
            )
    finally:
        m.stop()
        ex.shutdown()
        pool.terminate()
    return rows


def load_rows(quick: bool) -> list[Row]:
    import json
    import subprocess

    n = 200_000 if quick else 1_000_000
    here = Path(__file__).resolve().parent

    def run(mode: str) -> dict:
        out = subprocess.run([sys.executable, str(here / "load.py"), str(n), mode],
                             capture_output=True, text=True, check=True)  # fmt: skip
        return json.loads(out.stdout)

    full, bare = run("memory"), run("none")
    return [
        Row(f"memory per queued instance, {n:,} queued (memory store)", "-", "-",
            f"{full['bytes_per_instance']:,.0f} B", None, "<= 500 B",
            full["bytes_per_instance"] <= 500),  # issue 14 (DESIGN.md §4 said 1 KiB)
        Row("  of which the manager itself (store records excluded)", "-", "-",
            f"{bare['bytes_per_instance']:,.0f} B", None, "", None),
        Row(f"draining {n:,} queued no-op instances", "-", "-",
            f"{full['drain_rate'] / 1e3:,.1f} k jobs/s", None, "", None),
        Row(f"scheduling {n:,} instances (one thread)", "-", "-",
            f"{full['schedule_rate'] / 1e3:,.1f} k jobs/s", None, "", None),
    ]  # fmt: skip


def store_rows(quick: bool) -> list[Row]:
    """End-to-end no-op jobs/s on 2 workers through each durable store, against the
    memory store, interleaved round by round (issue 12: at least 0.5x, goal 0.8x): the
    record pipeline (queue=False: instances queued in the manager, records written by
    the store's writer); then, informational, one manager on the store's shared queue
    (the default), scheduling with map() (a thousand per store call) and with submit()
    in a loop (a store round trip per call: it returns once the instance is stored)."""
    import os
    import tempfile

    from jobengine import Manager, open_store

    n = 5_000 if quick else 20_000
    rounds = 3 if quick else 5
    urls = {
        "memory store": "memory://",
        "SQLite store": "sqlite:///" + os.path.join(tempfile.mkdtemp(), "bench.db"),
        "Redis store": os.environ.get("JOBENGINE_REDIS_URL", "redis://127.0.0.1:6379/0"),
        "PostgreSQL store": os.environ.get(
            "JOBENGINE_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    }
    managers, skipped = {}, []
    for name, url in urls.items():
        try:
            store = open_store(url, namespace=f"bench_{os.getpid()}")
        except Exception as e:  # a server that is not running here
            skipped.append((name, str(e).splitlines()[0]))
            continue
        store.clear()
        m = Manager(2, store=store, queue=False).start()
        while len([w for w in m.workers if w.pid]) < 2:
            time.sleep(0.005)
        ew.jobengine_submit_noop(m, 1_000)  # warm: executor shipped, writer started
        managers[name] = m
    times: dict[str, list[float]] = {name: [] for name in managers}
    try:
        for r in range(rounds):
            order = list(managers) if r % 2 == 0 else list(reversed(managers))
            for name in order:
                times[name].append(ew.jobengine_submit_noop(managers[name], n))
    finally:
        for m in managers.values():
            m.stop()
            m.store.clear()
    base = statistics.median(times["memory store"])
    rate = lambda sec: f"{n / sec / 1e3:,.1f} k jobs/s"  # noqa: E731
    rows = []
    for name in managers:
        if name == "memory store":
            continue
        t = statistics.median(times[name])
        rows.append(Row(f"no-op jobs end to end, 2 workers, {name}", "memory store", rate(base),
                        rate(t), base / t, ">= 0.5x (goal 0.8x)", base / t >= 0.5))  # fmt: skip
    for name, why in skipped:
        rows.append(Row(f"no-op jobs end to end, 2 workers, {name}", "memory store", "-",
                        f"not measured: {why}", None, ">= 0.5x", None))  # fmt: skip
    for name, url in urls.items():
        if name == "memory store" or name in dict(skipped):
            continue
        store = open_store(url, namespace=f"benchq_{os.getpid()}")
        store.clear()
        m = Manager(2, store=store).start()
        try:
            ew.jobengine_map_noop(m, 1_000, 1)  # warm
            t_map = statistics.median(ew.jobengine_map_noop(m, n, 1) for _ in range(3))
            k = max(500, n // 10)
            t_sub = statistics.median(ew.jobengine_submit_noop(m, k) for _ in range(3))
        finally:
            m.stop()
            store.clear()
        rows.append(Row(f"shared queue, 1 manager x 2 workers, {name}, map()", "memory store",
                        rate(base), rate(t_map), base / t_map, "", None))  # fmt: skip
        rows.append(Row(f"shared queue, 1 manager x 2 workers, {name}, submit() loop",
                        "memory store", rate(base), f"{k / t_sub / 1e3:,.1f} k jobs/s",
                        base / (t_sub * n / k), "", None))  # fmt: skip
    return rows


def queue_rows(quick: bool) -> list[Row]:
    """jobs/s through one Redis, two consumer processes of 2 workers each, against Huey,
    Dramatiq and RQ measured in the same run (issue 13: at least 20k/s and ahead of
    every peer); SQLite's and PostgreSQL's pre-filled figures beside it."""
    import queue_bench

    try:
        rates = queue_bench.measure(quick)
    except Exception as e:  # no Redis here
        return [Row("shared queue through Redis", "-", "-", f"not measured: {e}", None, "", None)]
    ours = rates.pop("jobengine", None)
    rows = []
    if ours is None:
        return rows
    k = lambda r: f"{r / 1e3:,.1f} k jobs/s"  # noqa: E731
    for how, label in (("prefilled", "pre-filled"), ("end_to_end", "end to end")):
        best = max((r[how] for r in rates.values()), default=None)
        for name, r in rates.items():
            rows.append(Row(f"Redis queue, {label}, 2 x 2 workers", name, k(r[how]), k(ours[how]),
                            ours[how] / r[how], "ahead of every peer",
                            ours[how] >= (best or 0)))  # fmt: skip
        met = ours[how] >= 20_000 if how == "prefilled" else None
        rows.append(Row(f"Redis queue, {label}, 2 x 2 workers", "-", "-", k(ours[how]), None,
                        ">= 20k jobs/s" if met is not None else "", met))  # fmt: skip
    for name, rate in queue_bench.durable_prefilled(quick).items():
        rows.append(Row(f"{name} queue, pre-filled, 2 x 2 workers", "-", "-", k(rate), None, "",
                        None))  # fmt: skip
    return rows


SECTIONS: list[tuple[str, Callable[[bool], list[Row]]]] = [
    ("compiled core (DESIGN.md §4 row 1)", core_rows),
    ("engine (DESIGN.md §4 rows 2-5)", engine_rows),
    ("load (issue 4)", load_rows),
    ("stores (issue 12)", store_rows),
    ("queue (issue 13)", queue_rows),
]


def render(rows: list[Row], markdown: bool) -> str:
    head = ["what", "peer", "peer", "jobengine", "ratio", "target", "verdict"]
    body = [
        [
            r.what,
            r.peer,
            r.peer_figure,
            r.ours,
            (f"{r.ratio:.2f}x" if r.ratio < 1 else f"{r.ratio:.1f}x") if r.ratio else "-",
            r.goal,
            r.verdict(),
        ]
        for r in rows
    ]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(b) + " |" for b in body]
        return "\n".join(lines)
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(
        [fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*b) for b in body]
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes, fewer rounds")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    ap.add_argument(
        "--only", choices=["core", "engine", "load", "stores", "queue"], help="measure one section"
    )
    args = ap.parse_args(argv)
    rows: list[Row] = []
    for title, section in SECTIONS:
        prefix = {"core": "compiled", "engine": "engine", "load": "load", "stores": "stores",
                  "queue": "queue"}  # fmt: skip
        if args.only and not title.startswith(prefix[args.only]):
            continue
        print(f"measuring {title} ...", file=sys.stderr, flush=True)
        rows += section(args.quick)
    print(render(rows, args.markdown))
    missed = [r for r in rows if r.met is False]
    print(
        f"\n{len(rows) - len(missed)} of {len(rows)} rows met or informational; "
        f"{len(missed)} missed (medians, ratios measured in this run)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
