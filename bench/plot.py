"""Throughput and speedup against job size: jobengine next to ProcessPoolExecutor and
multiprocessing.Pool, measured in one run (interleaved with the serial baseline), drawn
to docs/job_size.png.

    python bench/plot.py [--quick] [--out docs/job_size.png]

For each job size (CPU-bound work of 10 us to 10 ms, calibrated on this machine) it
times the same batch through `Manager.submit`, `ProcessPoolExecutor.submit` and
`Pool.apply_async` (medians of 3 rounds), and plots jobs/s and the speedup over running
the batch serially.  Needs matplotlib (`pip install matplotlib`; the bench extra).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import engine_workloads as ew

SIZES_US = (10, 30, 100, 300, 1000, 3000, 10000)


def pool_burn(pool, n: int, loops: int) -> float:
    t = time.perf_counter()
    results = [pool.apply_async(ew.burn, (loops,)) for _ in range(n)]
    for r in results:
        r.get()
    return time.perf_counter() - t


def measure(quick: bool) -> dict[str, dict[int, tuple[float, float]]]:
    """{peer: {size_us: (jobs/s, speedup over serial)}}"""
    workers = os.cpu_count() or 1
    per_us = ew.loops_per_us()
    m, ex, pool = ew.started_manager(workers), ew.new_ppe(workers), ew.new_pool(workers)
    rounds = 3
    out: dict[str, dict[int, tuple[float, float]]] = {"jobengine": {}, "ProcessPoolExecutor": {},
                                                       "multiprocessing.Pool": {}}  # fmt: skip
    try:
        for us in SIZES_US:
            loops = max(1, int(us * per_us))
            jobs = max(200, int((0.3 if quick else 1.0) / (us * 1e-6)))
            jobs = min(jobs, 5_000 if quick else 20_000)
            runs: dict[str, list[float]] = {k: [] for k in out}
            serials = []
            for _ in range(rounds):  # interleaved: a noisy moment hits every peer
                serials.append(ew.serial_burn(jobs, loops))
                runs["jobengine"].append(ew.jobengine_burn(m, jobs, loops))
                runs["ProcessPoolExecutor"].append(ew.ppe_burn(ex, jobs, loops))
                runs["multiprocessing.Pool"].append(pool_burn(pool, jobs, loops))
            serial = statistics.median(serials)
            for name, times in runs.items():
                t = statistics.median(times)
                out[name][us] = (jobs / t, serial / t)
            line = "  ".join(f"{k} {v[us][0]:,.0f}/s x{v[us][1]:.2f}" for k, v in out.items())
            print(f"{us:>6} us: {line}", flush=True)
    finally:
        m.stop()
        ex.shutdown()
        pool.terminate()
    return out


def draw(data: dict[str, dict[int, tuple[float, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, points in data.items():
        sizes = sorted(points)
        left.plot(sizes, [points[s][0] for s in sizes], marker="o", label=name)
        right.plot(sizes, [points[s][1] for s in sizes], marker="o", label=name)
    workers = os.cpu_count() or 1
    right.axhline(workers, color="grey", linestyle=":", label=f"{workers} cores")
    for ax, title in ((left, "throughput (jobs/s)"), (right, "speedup over serial")):
        ax.set_xscale("log")
        ax.set_xlabel("job size (us of CPU work)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    left.set_yscale("log")
    right.legend()
    fig.suptitle(f"CPU-bound jobs on {workers} cores (medians of 3 interleaved rounds)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller batches")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "docs" /
                                         "job_size.png"))  # fmt: skip
    args = ap.parse_args(argv)
    draw(measure(args.quick), Path(args.out))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
