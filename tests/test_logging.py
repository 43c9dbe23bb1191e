"""jobengine and the stdlib logging module: job log lines reach `jobengine.job`, and what
jobs log through `logging` in a worker reaches the manager's handlers (logbridge.py)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap

import jobs

from jobengine import Job, Manager

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)


def test_job_log_lines_go_to_the_jobengine_job_logger_with_uuid_and_kind(caplog):
    caplog.set_level(logging.INFO, logger="jobengine.job")
    with Manager(1) as m:
        ji = m.schedule_job(Job("logging-lines", jobs.log_lines), args=(2,))
        ji.result(timeout=30)
        m.lookup_instance_logs(ji)  # (the records are written by now)
    records = [r for r in caplog.records if r.name == "jobengine.job"]
    assert [(r.levelname, r.getMessage()) for r in records] == [
        ("INFO", "line 0"), ("INFO", "line 1"), ("WARNING", "careful")]  # fmt: skip
    assert {(r.uuid, r.kind, r.attempt) for r in records} == {(ji.uuid_str, "logging-lines", 1)}


def test_a_failed_job_s_error_line_reaches_the_logger_too(caplog):
    caplog.set_level(logging.ERROR, logger="jobengine.job")
    with Manager(1) as m:
        ji = m.schedule_job(Job("logging-fail", jobs.fail), args=("kaput",))
        ji.exception(timeout=30)
        m.lookup_instance_logs(ji)
    (record,) = [r for r in caplog.records if r.name == "jobengine.job"]
    assert record.levelno == logging.ERROR and "kaput" in record.getMessage()
    assert record.uuid == ji.uuid_str


def test_a_worker_s_logging_records_reach_the_manager_s_handlers(caplog):
    caplog.set_level(logging.INFO)  # before the pool starts: workers forward INFO and up
    with Manager(1) as m:
        assert m.submit(jobs.log_through_logging, 5).result(timeout=30) == 5
        m.stop_with_wait()
    records = [r for r in caplog.records if r.name == "tests.jobs"]
    assert [(r.levelname, r.getMessage()) for r in records] == [
        ("INFO", "working on 5"), ("ERROR", "it failed")]  # fmt: skip
    assert all(r.processName.startswith("jobengine worker") for r in records)
    assert all(r.process != os.getpid() for r in records)
    assert "ValueError: bad 5" in records[1].exc_text


def test_an_executor_defined_in_main_logs_to_the_program_s_handlers():
    script = textwrap.dedent("""
        import logging
        logging.basicConfig(level=logging.INFO, format="%(name)s|%(levelname)s|%(message)s",
                            stream=__import__("sys").stdout)
        from jobengine import Job, Manager

        def work(n):
            logging.getLogger("main-job").warning("from the worker %d", n)
            return n

        if __name__ == "__main__":
            with Manager(1) as m:
                assert m.schedule_job(Job("main-logs", work), args=(3,)).result(30) == 3
    """)
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "main-job|WARNING|from the worker 3" in out.stdout.splitlines()
