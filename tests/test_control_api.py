"""The control API and the metrics of a running manager, end to end: a manager in its
own process (Manager(control=...)), asked over HTTP and through jobctl."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request

import pytest

from jobengine import Manager, __version__
from jobengine.errors import InvalidArgumentError

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
TOKEN = "s3cret-token"

MANAGER = """
    import sys
    import jobs
    from jobengine import Job, Manager
    with Manager(2, control={address!r}, control_token={token!r}) as m:
        m.register_job(Job("add", jobs.typed_add, description="adds"))
        m.register_job(Job("concat", jobs.concat))
        m.register_job(Job("sleep", jobs.typed_sleep))
        m.register_job(Job("fail", jobs.fail))
        print(m.control_url, flush=True)
        sys.stdin.read()  # until the test closes it
"""


def start_manager(address="127.0.0.1:0", token=None):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, TESTS]))
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(MANAGER).format(address=address, token=token)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env, cwd=TESTS)  # fmt: skip
    url = proc.stdout.readline().strip()
    assert url.startswith("http://"), proc.stderr.read()
    return proc, url


def stop_manager(proc):
    proc.stdin.close()
    try:
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.fixture(scope="module")
def manager():
    proc, url = start_manager()
    yield url
    stop_manager(proc)


def call(url, method="GET", body=None, token=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            raw, ctype = r.read(), r.headers["Content-Type"]
            return r.status, raw.decode() if ctype.startswith("text/") else json.loads(raw)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def jobctl(*args, env=None):
    full = dict(os.environ, PYTHONPATH=ROOT, **(env or {}))
    return subprocess.run([sys.executable, "-m", "jobengine", *args], capture_output=True,
                          text=True, timeout=60, env=full, cwd=TESTS)  # fmt: skip


def wait_final(url, uuid, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, row = call(f"{url}/instances/{uuid}")
        if row["state"] in ("COMPLETED", "TERMINATED", "TIMED_OUT", "CANCELED"):
            return row
        time.sleep(0.05)
    raise AssertionError(f"{uuid} did not finish")


# -- the API --------------------------------------------------------------------------------
def test_schedule_then_read_it_back(manager):
    status, row = call(f"{manager}/schedule", "POST", {"kind": "add", "args": ["2", "3"]})
    assert status == 201 and row["kind"] == "add" and row["state"] == "SCHEDULED"
    assert wait_final(manager, row["uuid"])["state"] == "COMPLETED"
    assert call(f"{manager}/instances/{row['uuid']}/result")[1]["result"] == 5
    status, history = call(f"{manager}/history/{row['uuid']}")
    assert [r["state"] for r in history] == ["CREATED", "SCHEDULED", "PROCESSING", "COMPLETED"]
    status, found = call(f"{manager}/instances?kind=add&state=COMPLETED")
    assert status == 200 and row["uuid"] in [r["uuid"] for r in found]
    concat = {"kind": "concat", "args": ['{"a": "x", "b": "y"}']}  # JSON text -> dataclass
    status, row = call(f"{manager}/schedule", "POST", concat)
    assert status == 201 and wait_final(manager, row["uuid"])["state"] == "COMPLETED"


def test_errors_are_json_with_the_right_status(manager):
    assert call(f"{manager}/schedule", "POST", {"kind": "nope"})[0] == 404
    status, body = call(f"{manager}/schedule", "POST", {"kind": "add", "args": ["x", "1"]})
    assert status == 400 and "'a'" in body["error"]
    assert call(f"{manager}/schedule", "POST", {"kind": "add", "colour": 1})[0] == 400
    assert call(f"{manager}/schedule", "POST", [1, 2])[0] == 400
    assert call(f"{manager}/history/no-such-uuid")[0] == 404
    assert call(f"{manager}/logs/no-such-uuid")[0] == 404
    assert call(f"{manager}/instances?state=SLEEPY")[0] == 400
    assert call(f"{manager}/nothing-here")[0] == 404
    assert call(f"{manager}/schedule")[0] == 405
    assert call(f"{manager}/resize", "POST", {"workers": "many"})[0] == 400


def test_cancel_a_running_instance(manager):
    status, row = call(f"{manager}/schedule", "POST", {"kind": "sleep", "args": [30]})
    deadline = time.monotonic() + 30
    while call(f"{manager}/instances/{row['uuid']}")[1]["state"] != "PROCESSING":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    status, body = call(f"{manager}/cancel", "POST", {"uuid": row["uuid"]})
    assert status == 200 and body == {"canceled": [row["uuid"]]}
    assert wait_final(manager, row["uuid"])["state"] == "CANCELED"
    assert call(f"{manager}/cancel", "POST", {"uuid": "no-such"})[0] == 404


def test_every_documented_endpoint_answers_as_documented(manager):
    status, doc = call(f"{manager}/openapi.json")
    with open(os.path.join(ROOT, "jobengine", "openapi.json")) as f:
        assert doc == json.load(f)  # the published document is the one served
    _, row = call(f"{manager}/schedule", "POST", {"kind": "add", "args": [1, 1]})
    wait_final(manager, row["uuid"])
    samples = {
        ("/schedule", "post"): {"kind": "add", "args": [1, 2]},
        ("/cancel", "post"): {"kind": "add", "state": "SCHEDULED"},
        ("/resize", "post"): {"workers": 2},
    }
    schemas = doc["components"]["schemas"]
    for path, methods in doc["paths"].items():
        for method, spec in methods.items():
            url = manager + path.replace("{uuid}", row["uuid"])
            status, body = call(url, method.upper(), samples.get((path, method)))
            assert str(status) in spec["responses"], (path, method, status, body)
            content = spec["responses"][str(status)].get("content", {})
            schema = content.get("application/json", {}).get("schema", {})
            if "$ref" in schema:
                schema = schemas[schema["$ref"].rsplit("/", 1)[1]]
            if schema.get("type") == "array" and body:
                item = schemas[schema["items"]["$ref"].rsplit("/", 1)[1]]
                assert set(item.get("required", ())) <= set(body[0]), (path, body[0])
            elif schema.get("type") == "object":
                assert set(schema.get("required", ())) <= set(body), (path, body)


def test_metrics_count_what_happened(manager):
    before = _metric(call(f"{manager}/metrics")[1], 'jobengine_jobs_terminated_total{kind="fail"}')
    _, row = call(f"{manager}/schedule", "POST", {"kind": "fail", "args": ["boom"]})
    wait_final(manager, row["uuid"])
    text = call(f"{manager}/metrics")[1]
    assert _metric(text, 'jobengine_jobs_terminated_total{kind="fail"}') == before + 1
    assert _metric(text, 'jobengine_jobs_executed_total{kind="fail"}') >= 1
    assert _metric(text, "jobengine_registered_jobs") == 4
    assert _metric(text, 'jobengine_job_run_seconds_count{kind="fail"}') >= 1
    assert 'jobengine_job_queue_wait_seconds_bucket{kind="fail",le="+Inf"}' in text
    assert _metric(text, "jobengine_store_outages_total") == 0
    assert _metric(text, 'jobengine_workers{state="idle"}') + _metric(
        text, 'jobengine_workers{state="busy"}') >= 1  # fmt: skip


def _metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


# -- jobctl against the running manager ---------------------------------------------------
def test_jobctl_operates_a_running_manager(manager):
    address = manager.removeprefix("http://")
    env = {"JOBENGINE_CONTROL": address}
    out = jobctl("jobs", "--json", env=env)
    assert {j["kind"] for j in json.loads(out.stdout)} == {"add", "concat", "sleep", "fail"}
    out = jobctl("schedule", "add", "20", "22", "--priority", "3", "--json", env=env)
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)
    wait_final(manager, row["uuid"])
    out = jobctl("result", row["uuid"], "--json", env=env)
    assert json.loads(out.stdout)[0]["result"] == 42
    out = jobctl("instances", "--uuid", row["uuid"], "--json", env=env)
    assert json.loads(out.stdout)[0]["state"] == "COMPLETED"
    out = jobctl("history", row["uuid"], "--control", address, "--json")
    assert json.loads(out.stdout)[-1]["state"] == "COMPLETED"
    host, port = address.split(":")
    out = jobctl("--host", host, "--port", port, "workers", "--json")  # options first
    assert out.returncode == 0, out.stderr
    out = jobctl("workers", "--json", "--port", port)  # or after, host 127.0.0.1
    assert out.returncode == 0, out.stderr
    out = jobctl("workers", "--json", env=env)
    assert all(w["pid"] for w in json.loads(out.stdout))
    out = jobctl("resize", "3", env=env)
    assert out.returncode == 0 and out.stdout.split() == ["WORKERS", "3"]
    jobctl("resize", "2", env=env)
    out = jobctl("stats", "--json", env=env)
    stats = json.loads(out.stdout)
    assert stats["completed"] >= 1 and stats["workers"] == 2
    out = jobctl("schedule", "sleep", "30", "--json", env=env)
    (slow,) = json.loads(out.stdout)
    out = jobctl("cancel", slow["uuid"], "--json", env=env)
    assert json.loads(out.stdout) == [{"canceled": slow["uuid"]}]
    out = jobctl("schedule", "add", "one", "2", env=env)
    assert out.returncode == 1 and "'a'" in out.stderr and "Traceback" not in out.stderr
    out = jobctl("history", "no-such-uuid", env=env)
    assert out.returncode == 1 and "no instance no-such-uuid" in out.stderr


# -- beyond loopback: a token ---------------------------------------------------------------
def test_beyond_loopback_a_token_is_required():
    with pytest.raises(InvalidArgumentError, match="control_token"):
        Manager(1, control="0.0.0.0:0")
    proc, url = start_manager("0.0.0.0:0", TOKEN)
    try:
        local = url.replace("0.0.0.0", "127.0.0.1")
        status, body = call(f"{local}/version")
        assert status == 401 and "token" in body["error"]
        assert call(f"{local}/version", token="wrong")[0] == 401
        status, body = call(f"{local}/version", token=TOKEN)
        assert status == 200 and body["version"] == __version__
        address = local.removeprefix("http://")
        out = jobctl("stats", "--control", address, "--token", "wrong")
        assert out.returncode == 1 and "refused the token (401)" in out.stderr
        out = jobctl("stats", "--control", address, env={"JOBENGINE_CONTROL_TOKEN": TOKEN})
        assert out.returncode == 0, out.stderr
    finally:
        stop_manager(proc)
