"""jobctl (and python -m jobengine): run as a user runs it, a separate process, against a
store a real manager wrote (SQLite, Redis, PostgreSQL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jobs
import pytest
from conftest import store_on

from jobengine import Job, Manager, SQLiteStore, __version__

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)


def jobctl(*args, env=None, timeout=60):
    """`python -m jobengine ARGS`: the same program as the jobctl console script."""
    full_env = dict(os.environ, PYTHONPATH=ROOT, **(env or {}))
    return subprocess.run([sys.executable, "-m", "jobengine", *args], capture_output=True,
                          text=True, timeout=timeout, env=full_env, cwd=TESTS)  # fmt: skip


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def written(request, tmp_path):
    """(store URL, namespace, {name: uuid}) of a store a manager has just written."""
    ns = f"cli_{os.getpid()}"
    make, url = store_on(request.param, tmp_path, ns)
    with Manager(1, store=make()) as m:
        ok = m.schedule_job(Job("cli-lines", jobs.log_lines), args=(2,))
        bad = m.schedule_job(Job("cli-fail", jobs.fail), args=("kaput",))
        ok.result(timeout=30)
        bad.exception(timeout=30)
    yield url, ns, {"ok": ok.uuid_str, "bad": bad.uuid_str}
    make().clear()


def test_version_and_help():
    out = jobctl("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"jobengine {__version__}"
    out = jobctl("version", "--json")
    assert json.loads(out.stdout) == {"version": __version__}
    out = jobctl("--help")
    assert out.returncode == 0
    for command in ("instances", "history", "logs", "preview", "demo", "version"):
        assert command in out.stdout


def test_instances_lists_and_filters_what_is_in_the_store(written):
    url, ns, uuids = written
    out = jobctl("instances", "--store", url, "--namespace", ns)
    assert out.returncode == 0, out.stderr
    header, *lines = out.stdout.splitlines()
    assert header.split() == ["UUID", "KIND", "STATE", "PRIORITY", "ATTEMPTS", "CREATED_AT",
                              "COMPLETED_AT"]  # fmt: skip
    expected = [[uuids["ok"], "cli-lines", "COMPLETED"], [uuids["bad"], "cli-fail", "TERMINATED"]]
    assert sorted(line.split()[:3] for line in lines) == sorted(expected)
    out = jobctl("instances", "--store", url, "--namespace", ns, "--state", "error", "--json")
    assert [r["uuid"] for r in json.loads(out.stdout)] == [uuids["bad"]]
    out = jobctl("instances", "--store", url, "--namespace", ns, "--kind", "cli-lines",
                 "--since", "1h", "--json")  # fmt: skip
    assert [r["state"] for r in json.loads(out.stdout)] == ["COMPLETED"]
    out = jobctl("instances", "--namespace", ns, "--json", env={"JOBENGINE_STORE": url})
    assert len(json.loads(out.stdout)) == 2  # the store from the environment


def test_history_and_logs_of_one_instance(written):
    url, ns, uuids = written
    out = jobctl("history", uuids["ok"], "--store", url, "--namespace", ns, "--json")
    assert [r["state"] for r in json.loads(out.stdout)] == [
        "CREATED", "SCHEDULED", "PROCESSING", "COMPLETED"]  # fmt: skip
    out = jobctl("logs", uuids["ok"], "--store", url, "--namespace", ns)
    assert [line.split()[-2:] for line in out.stdout.splitlines()[1:]] == [
        ["line", "0"], ["line", "1"], ["1", "careful"]]  # fmt: skip
    out = jobctl("logs", uuids["bad"], "--store", url, "--namespace", ns, "--level", "error",
                 "--json")  # fmt: skip
    (line,) = json.loads(out.stdout)
    assert line["level"] == "ERROR" and "kaput" in line["message"]
    # --follow on a finished instance prints what there is and returns
    out = jobctl("logs", uuids["ok"], "--store", url, "--namespace", ns, "--follow", "--json")
    assert [json.loads(x)["message"] for x in out.stdout.splitlines()] == [
        "line 0", "line 1", "careful"]  # fmt: skip


def test_logs_follow_prints_lines_as_a_running_job_writes_them(tmp_path):
    path = tmp_path / "follow.db"
    with Manager(1, store=SQLiteStore(str(path))) as m:
        ji = m.schedule_job(Job("cli-slow-lines", jobs.slow_lines), args=(3, 0.4))
        proc = subprocess.Popen(
            [sys.executable, "-m", "jobengine", "logs", ji.uuid_str, "--store",
             f"sqlite:///{path}", "--follow", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, PYTHONPATH=ROOT))  # fmt: skip
        try:
            first = json.loads(proc.stdout.readline())
            assert first["message"] == "step 0" and not ji.done()  # while it still runs
            rest = proc.stdout.read()  # (not communicate(): the first read buffered ahead)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, proc.stderr.read()
    assert [json.loads(x)["message"] for x in rest.splitlines()] == ["step 1", "step 2"]


def test_result_of_one_instance(written):
    url, ns, uuids = written
    out = jobctl("result", uuids["ok"], "--store", url, "--namespace", ns, "--json")
    assert json.loads(out.stdout) == [
        {"uuid": uuids["ok"], "state": "COMPLETED", "result": 2, "error": None}]  # fmt: skip
    out = jobctl("result", uuids["bad"], "--store", url, "--namespace", ns, "--json")
    (row,) = json.loads(out.stdout)
    assert row["result"] is None and "kaput" in row["error"]
    out = jobctl("result", "no-such", "--store", url, "--namespace", ns)
    assert out.returncode == 1 and "no instance no-such" in out.stderr


def test_preview_prints_the_next_fire_times():
    out = jobctl("preview", "@every 90s", "--tz", "UTC", "--count", "3", "--json")
    fires = [r["fire"] for r in json.loads(out.stdout)]
    assert len(fires) == 3 and all(f.endswith("+00:00") for f in fires)
    out = jobctl("preview", "0 9 * * 1-5", "--tz", "Europe/Paris", "--count", "2")
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 3


@pytest.mark.parametrize(
    ("args", "status", "says"),
    [
        (["instances"], 1, "no store and no manager: give --store URL"),
        (["jobs"], 1, "jobs needs a running manager: give --control HOST:PORT"),
        (["stats", "--control", "127.0.0.1:1"], 1, "cannot reach the manager at"),
        (["instances", "--store", "redis://127.0.0.1:1/0"], 1, "cannot open store"),
        (["instances", "--store", "ftp://x"], 1, "store"),
        (["instances", "--store", "sqlite:///x.db", "--state", "bogus"], 2, "unknown state"),
        (["instances", "--store", "sqlite:///x.db", "--since", "yesterday"], 2, "duration"),
        (["history", "0000", "--store", "sqlite:///{tmp}/empty.db"], 1, "no instance 0000"),
        (
            ["logs", "0000", "--store", "sqlite:///{tmp}/empty.db", "--level", "loud"],
            2,
            "unknown level",
        ),
        (["preview", "not a crontab"], 1, "invalid crontab"),
        (["preview", "* * * * *", "--count", "0"], 2, "not a whole number"),
        (["frobnicate"], 2, "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_a_non_zero_status_never_a_traceback(
    tmp_path, args, status, says
):
    out = jobctl(*[a.format(tmp=tmp_path) for a in args])
    assert out.returncode == status, (out.stdout, out.stderr)
    assert says in out.stderr and "Traceback" not in out.stderr
