"""The README's first command ends in `python -m jobengine demo`: it must run and report."""

import subprocess
import sys


def test_demo_runs_and_prints_its_table():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobengine",
            "demo",
            *(["--jobs", "60", "--limit", "3000", "--workers", "2"]),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for needle in ("60/60 done", "throughput", "speedup over serial", "final state COMPLETED"):
        assert needle in out, out
    # 60 jobs: i % 50 == 7 -> flaky (retried, completes), i % 100 == 42 -> always fails
    assert "final state TERMINATED       1" in out
    assert "final state COMPLETED        59" in out


def test_demo_rejects_bad_arguments():
    proc = subprocess.run(
        [sys.executable, "-m", "jobengine", "demo", "--jobs", "0"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "--jobs" in proc.stderr and ">= 1" in proc.stderr
