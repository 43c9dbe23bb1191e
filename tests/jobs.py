"""Executors for the engine tests.  Module-level, so workers import them by name."""

from __future__ import annotations

import dataclasses
import os
import time

from jobengine import Instance, Job, Manager, WorkerInfo


def add(a, b):
    return a + b


def noop():
    return None


def pid():
    return os.getpid()


def sleep_then(seconds, value=None):
    time.sleep(seconds)
    return value


def fail(message="boom"):
    raise ValueError(message)


class CustomError(Exception):
    def __init__(self, code, detail):  # an __init__ pickle cannot replay
        super().__init__(f"code {code}: {detail}")
        self.code = code


def fail_custom():
    raise CustomError(7, "custom")


def log_lines(n, ji):
    for i in range(n):
        ji.info(f"line {i}")
    ji.warn("careful")
    return n


def annotated(x: int, inst: Instance) -> str:
    inst.debug(f"x={x}")
    return inst.uuid


def append_line(path, text):
    # O_APPEND writes of one short line are atomic: a record of every run.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{text}\n".encode())
    finally:
        os.close(fd)
    return text


def append_after(path, text, seconds):
    time.sleep(seconds)
    return append_line(path, text)


def cpu(n):
    s = 0
    for i in range(n):
        s += i * i
    return s


def spin(seconds, value=None):
    """Keep the CPU busy for `seconds` (a CPU-bound job of a known length)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return value


def big(n):
    return b"x" * n


def echo(x):
    return x


def echo_all(*args):
    """Its arguments as a list; the Instance a "?" placeholder became, as its uuid."""
    return [a.uuid if type(a).__name__ == "WorkerInstance" else a for a in args]


def touch_then_sleep(path, seconds):
    """A job to kill mid-run: its first attempt creates `path` (the test sees it has
    started) and sleeps; a later attempt finds the mark and returns at once."""
    if os.path.exists(path):
        return "again"
    open(path, "a").close()
    time.sleep(seconds)
    return "first"


def fail_until(ok_attempt, ji):
    """Fails its attempts before `ok_attempt`, then returns the attempt that succeeded."""
    if ji.attempt < ok_attempt:
        raise RuntimeError(f"attempt {ji.attempt} fails")
    return ji.attempt


def as_tuple(items):
    return tuple(items)


def unpicklable_result():
    import threading

    return threading.Lock()


class Counter:
    def __init__(self, base):
        self.base = base

    def plus(self, x):
        return self.base + x


def exit_interpreter(code):
    import sys

    sys.exit(code)


def hard_exit(code):
    os._exit(code)


def kill_self(signum):
    os.kill(os.getpid(), signum)
    time.sleep(5)


def segfault():
    import ctypes
    import resource

    # no core file: where core dumps are on, each run would leave ~20 MB in the cwd
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    ctypes.string_at(0)


def hang_in_c(seconds):
    time.sleep(seconds)  # blocks inside C; only a signal gets it out


def hang_ignoring_sigterm(seconds):
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(seconds)


def hang_blocking_interrupts(seconds):
    # C code that never returns to the interpreter looks like this to a worker: the
    # interrupt cannot be delivered, so only the hard kill ends it.
    import signal

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    time.sleep(seconds)


def swallow_interrupts(seconds, path=None):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            time.sleep(0.05)
        except BaseException:  # a job that refuses to stop
            if path:
                append_line(path, "swallowed")


def cleanup_on_interrupt(path, seconds):
    try:
        time.sleep(seconds)
    finally:
        append_line(path, "cleaned up")


def hog_memory(mb, seconds):
    block = bytearray(mb << 20)
    for i in range(0, len(block), 4096):
        block[i] = 1  # touch every page: RSS, not just address space
    time.sleep(seconds)
    return len(block)


def record_run(path, key, seconds=0.0):
    """Append "key pid time_ns" (a run happened), optionally after some work."""
    if seconds:
        time.sleep(seconds)
    append_line(path, f"{key} {os.getpid()} {time.time_ns()}")
    return key


def stamp_run(ji):
    return ji.attempt


def slow_value(seconds, value):
    time.sleep(seconds)
    return value


_calls = {"n": 0}


def counter():
    """Returns 1, 2, 3... per worker process (a fresh worker restarts at 1)."""
    _calls["n"] += 1
    return _calls["n"]


def hold_until(path, value=None, limit=30.0):
    """Run until the file at `path` exists (a gate the test opens), then return value."""
    deadline = time.monotonic() + limit
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.005)
    return value


# -- for the Executor contract tests ---------------------------------------------------
INIT_STATE = {"value": "uninitialized", "calls": 0}


def init_state(value, path=None):
    INIT_STATE["value"] = value
    INIT_STATE["calls"] += 1
    if path is not None:
        append_line(path, os.getpid())


def read_init_state():
    return INIT_STATE["value"], INIT_STATE["calls"]


def init_fails():
    raise ValueError("error in initializer")


def raise_runtime_error():
    raise RuntimeError(123)  # the line the remote traceback must show


def put_and_wait(queue, event, value):
    queue.put(value)
    event.wait(30)
    return value


def proc_identity():
    import multiprocessing

    with open(f"/proc/{os.getpid()}/cmdline", "rb") as f:
        cmdline = f.read().replace(b"\0", b" ").decode().strip()
    return multiprocessing.current_process().name, cmdline


class Holder:
    def method(self):
        return 1


def make_holder(_):
    return Holder()


def init_put(queue, value):
    queue.put((value, os.getpid()))


class ExitOnLoad:
    """A callable whose unpickling ends the process that loads it (a worker)."""

    def __call__(self):
        return "never"

    def __reduce__(self):
        return (os._exit, (3,))


class SystemExitOnLoad:
    """A result whose unpickling raises SystemExit (in the manager)."""

    def __reduce__(self):
        return (sys_exit, (5,))


def sys_exit(code):
    raise SystemExit(code)


def return_system_exit_on_load():
    return SystemExitOnLoad()


class HoldsALock:
    def __init__(self):
        import threading

        self.lock = threading.Lock()

    def run(self):
        return 1


def instance_first(ji: Instance, a, b):
    ji.info(f"{a}+{b}")
    return a + b


def instance_middle(a, ji, b):
    return (a, b, ji.attempt)


def long_cleanup(path, seconds):
    try:
        time.sleep(seconds)
    finally:
        append_line(path, f"cleaned {os.getpid()}")


def uuid_of(target):
    """go-job's "?" placeholder in use: `target` is the instance itself."""
    return target.uuid


def log_levels(target):
    target.debug("d")
    target.info("i")
    target.warn("w")
    target.error("e")


def catch_exception_then_clean(path, seconds):
    """A job whose `except Exception` must not swallow a cancel or a timeout, and whose
    finally block must run."""
    try:
        try:
            time.sleep(seconds)
        except Exception:
            append_line(path, "swallowed by except Exception")
    finally:
        append_line(path, "finally ran")


def typed_add(a: int, b: int) -> int:
    return a + b


def typed_str(x: str) -> str:
    return x


@dataclasses.dataclass
class ConcatOpt:
    a: str
    b: str


def concat(opt: ConcatOpt) -> str:
    return opt.a + " " + opt.b


def schedule_follow_ups(n: int, mgr: Manager, me: WorkerInfo) -> dict:
    """Schedules follow-up jobs three ways from inside a job, and one the manager refuses."""
    return {
        "registered": mgr.schedule_registered_job("add", args=(n, 1)),
        "submitted": mgr.submit(add, n, 2),
        "job": mgr.schedule_job(Job("follow-up-echo", echo), args=(n,), priority=3),
        "refused": mgr.schedule_registered_job("no-such-kind"),
        "worker": (me.index, me.pid, me.current, me.state),
    }


def log_through_logging(n):
    """Logs through the stdlib `logging` module inside the worker."""
    import logging

    log = logging.getLogger("tests.jobs")
    log.info("working on %d", n)
    log.debug("too fine to forward")
    try:
        raise ValueError(f"bad {n}")
    except ValueError:
        log.exception("it failed")
    return n


def slow_lines(n, pause, ji):
    for i in range(n):
        ji.info(f"step {i}")
        time.sleep(pause)
    return n


def typed_sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds
