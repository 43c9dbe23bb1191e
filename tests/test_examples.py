"""Every script in examples/ runs, as a user would run it, and prints what it promises."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

EXPECT = {
    "basic_usage.py": ["CREATED", "SCHEDULED", "PROCESSING", "COMPLETED", "Result: 3"],
    "arbitrary_functions.py": ["3 Hello world!"],
    "scheduling.py": ["after ran at", "at ran at", "nightly next fires at", "T00:00:00"],
    "priority.py": ["['high', 'high-2', 'mid', 'low']"],
    "worker_pool.py": ["10 workers", "5050"],
    "observation.py": ["state -> COMPLETED", "Job completed: 42", "State: COMPLETED"],
    "custom_store.py": ["total 332833500: 4000 state records"],
}


def test_every_example_is_covered():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECT)


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_example_runs(name):
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    for needle in EXPECT[name]:
        assert needle in proc.stdout, (needle, proc.stdout)
