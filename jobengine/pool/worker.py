"""The worker loop: take tasks from the task ring, run them, publish events.

Runs in a process forked by the supervisor.  Per job it does: publish STARTED, decode the
args (pickle), call the executor, pickle the result, publish OK or ERR (the common case
in one compiled call, _core.worker_attempt; Worker._attempt is the reference).  Executors
arrive once per kind (T_DEFINE, cloudpickle) and are kept by kind id, so a task record
carries only a small id and the arguments.

Owns: the executors it received and the attempt it runs.  Never does: touch the store or
another worker's rings.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import sys
import time
import traceback
from typing import Any

import cloudpickle
import psutil

from .._core import worker_attempt
from ..errors import JobCanceled, JobTimeout, SerializationError, TaskLoadError
from ..logbridge import install_in_worker
from ..records import LogLevel, LogMethods
from .channel import (
    ANY_ATTEMPT,
    E_ERR,
    E_INIT_ERR,
    E_LOG,
    E_OK,
    E_PYLOG,
    E_SCHEDULE,
    E_STARTED,
    INTERRUPT_STOP,
    INTERRUPT_TIMEOUT,
    T_DEFINE,
    T_FORGET,
    T_INIT,
    T_STOP,
    T_TASK,
    TAG_MASK,
    Channel,
    read_interrupt,
    read_payload,
    write_interrupt,
    write_record,
    write_status,
)
from .follow_up import WorkerManager
from .pool import WorkerInfo

# Spin this long on an empty task ring before parking: covers the gap between one job
# and the next under load without a futex round trip, and costs little when idle.
SPIN_S = 50e-6
PARK_TIMEOUT_S = 1.0  # wake up now and then to notice a dead parent


class WorkerInstance(LogMethods):
    """The instance as an executor sees it inside the worker: identity, arguments, and
    the log methods, whose lines land in the instance's log history."""

    __slots__ = ("_worker", "args", "attempt", "kind", "kwargs", "packed", "uuid")

    def __init__(
        self,
        worker: Worker,
        packed: int,
        uuid: str,
        kind: str,
        attempt: int,
        args: tuple,
        kwargs: dict,
    ):
        self._worker = worker
        self.packed = packed
        self.uuid = uuid
        self.kind = kind
        self.attempt = attempt
        self.args = args
        self.kwargs = kwargs

    def _log(self, level: LogLevel, msg: Any) -> None:
        self._worker.emit(E_LOG, self.packed, time.time_ns(), bytes([level]) + str(msg).encode())


def encode_error(exc: BaseException) -> bytes:
    """The exception itself when it survives a pickle round trip, plus always its type,
    message and traceback as text, so the manager can rebuild something faithful."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        raw = pickle.dumps(exc, protocol=5)
        pickle.loads(raw)  # exceptions with custom __init__ often pickle but won't load
    except BaseException:
        raw = None
    return pickle.dumps((raw, type(exc).__qualname__, str(exc), tb), protocol=5)


class _Unloadable:
    """Stands for an executor the worker could not load; running it fails the job."""

    __slots__ = ("error",)

    def __init__(self, error: TaskLoadError):
        self.error = error


def _load_error(what: str, kind: str, exc: BaseException, module: str | None) -> TaskLoadError:
    module = getattr(exc, "name", None) if isinstance(exc, ImportError) else module
    where = f" (module {module!r})" if module else ""
    return TaskLoadError(
        f"{what} of job {kind!r} cannot be loaded in the worker{where}: "
        f"{type(exc).__name__}: {exc}",
        module,
    )


class Worker:
    def __init__(self, index: int, channel: Channel, parent_pid: int, log_level: int = 30):
        self.index = index
        self.channel = channel
        self.parent_pid = parent_pid
        self.executors: dict[int, tuple[Any, Any, str, float | None, str | None]] = {}
        self.mm = channel.mm
        # The attempt whose executor runs now (0: none), and what to say if it must be
        # interrupted; set around each call, read by the SIGUSR1 handler.
        self.current = 0
        self.current_job: tuple[str, float | None] = ("", None)
        self.interrupted = False  # an interrupt was raised in the current attempt
        self.jobs = 0  # attempts finished (WorkerInfo.jobs)
        signal.signal(signal.SIGUSR1, self._on_interrupt)
        install_in_worker(lambda blob: self.emit(E_PYLOG, self.current, time.time_ns(), blob),
                          log_level)  # fmt: skip

    def _on_interrupt(self, signum: int, frame: Any) -> None:
        """The supervisor asks to stop an attempt (the interrupt word names it): raise
        JobTimeout or JobCanceled inside the job if it is the one running; otherwise it
        has already ended, so clear the word (no SIGKILL follows)."""
        target, reason = read_interrupt(self.mm)
        current = self.current
        if current and target in (current, ANY_ATTEMPT):
            self.current = 0  # once per attempt
            self.interrupted = True
            kind, timeout = self.current_job
            if reason == INTERRUPT_TIMEOUT:
                of = f" of {timeout:g} s" if timeout else ""
                raise JobTimeout(f"job {kind!r} ran past its timeout{of}")
            if reason == INTERRUPT_STOP:
                raise JobCanceled(f"job {kind!r} interrupted: the manager is stopping")
            raise JobCanceled(f"job {kind!r} canceled while running")
        write_interrupt(self.mm, 0, 0)

    def emit(self, tag: int, a: int, b: int, payload: bytes = b"", publish: bool = True) -> None:
        """Write an event; publish it (waking the manager if it sleeps) unless
        `publish` is False: then the caller publishes it soon (run() does, see there)."""
        ring = self.channel.events
        while not write_record(ring, tag, a, b, payload):
            # The manager is behind: make what we wrote visible, then give it time.
            ring.publish()
            time.sleep(20e-6)
            self._check_parent()
        if publish:
            ring.publish()

    def _check_parent(self) -> None:
        if os.getppid() != self.parent_pid:
            os._exit(3)

    def run(self) -> int:
        """Serve tasks until told to stop; return the exit status."""
        tasks = self.channel.tasks
        while True:
            records = tasks.read_many(64)
            if not records:
                if not tasks.wait(PARK_TIMEOUT_S, SPIN_S):
                    self._check_parent()
                continue
            last = len(records) - 1
            for i, (tag, a, b, payload) in enumerate(records):
                kind = tag & TAG_MASK
                if kind == T_TASK:
                    # An attempt's outcome is written unpublished: when the next record
                    # is another task, its STARTED (microseconds later) publishes both,
                    # one wake-up of the manager per job instead of two.  Anything else
                    # (no next task here, or an exception on its way out) publishes now.
                    ran = False
                    try:
                        self._run_task(a, b, read_payload(tag, payload))
                        ran = True
                    finally:
                        if not ran or i == last or records[i + 1][0] & TAG_MASK != T_TASK:
                            self.channel.events.publish()
                elif kind == T_DEFINE:
                    self._define(a, read_payload(tag, payload))
                elif kind == T_FORGET:
                    self.executors.pop(a, None)
                elif kind == T_INIT:
                    if not self._initialize(read_payload(tag, payload)):
                        return 1
                elif kind == T_STOP:
                    return 0

    def _initialize(self, blob: bytes) -> bool:
        """Run Manager(initializer=...) once; False (reported) if it raised."""
        try:
            fn, args = cloudpickle.loads(blob)
            fn(*args)
        except BaseException as exc:
            # Where ProcessPoolExecutor's workers report it, for code that listens there.
            logging.getLogger("concurrent.futures").critical(
                "Exception in initializer:", exc_info=True
            )
            self.emit(E_INIT_ERR, 0, time.time_ns(), encode_error(exc))
            return False
        return True

    def info(self, current: str | None) -> WorkerInfo:
        """This worker as Manager.workers shows it (an executor may ask for it)."""
        try:
            rss = psutil.Process().memory_info().rss
        except Exception:
            rss = None
        return WorkerInfo(self.index, os.getpid(), "busy", current, rss, None, self.jobs)

    def _define(self, kind_id: int, blob: bytes) -> None:
        kind, module, inject, timeout, raw = pickle.loads(blob)
        try:
            fn = cloudpickle.loads(raw)
        except BaseException as exc:  # an import error, or a module that exits
            fn = _Unloadable(_load_error("the executor", kind, exc, module))
        self.executors[kind_id] = (fn, inject, kind, timeout, module)

    def _run_task(self, packed: int, kind_id: int, payload: bytes) -> None:
        fn, inject, kind, timeout, module = self.executors[kind_id]
        self.current_job = (kind, timeout)
        if timeout is not None:
            start = time.monotonic_ns()
            write_status(self.mm, packed, start, start + int(timeout * 1e9))
        try:
            if type(fn) is _Unloadable:
                self._attempt(packed, fn, inject, kind, module, payload)
            else:
                worker_attempt(self, self.channel.events, packed, fn, inject, kind, payload)
        finally:
            self.jobs += 1
            if timeout is not None:
                write_status(self.mm, 0)
            if self.interrupted:  # the attempt it named has ended: no SIGKILL follows
                self.interrupted = False
                write_interrupt(self.mm, 0, 0)

    def _attempt(
        self,
        packed: int,
        fn: Any,
        inject: tuple[str, int | None] | None,
        kind: str,
        module: str | None,
        payload: bytes,
    ) -> None:
        """One attempt, the reference path (_core.worker_attempt runs the common case
        compiled and comes back to _arguments_failed, _call, _failed and _send_result
        for the rest): STARTED, the arguments, the call, the outcome."""
        self.emit(E_STARTED, packed, time.time_ns())
        if type(fn) is _Unloadable:
            self.emit(E_ERR, packed, time.time_ns(), encode_error(fn.error), False)
            return
        try:
            # (in a list _call empties: no frame of ours keeps the arguments alive
            # while the result is pickled)
            box = [pickle.loads(payload)]
        except BaseException as exc:  # a class gone from the worker, or a hostile payload
            self._arguments_failed(packed, kind, exc)
            return
        self._call(packed, fn, inject, kind, box)

    def _arguments_failed(self, packed: int, kind: str, exc: BaseException) -> None:
        err = _load_error("the arguments", kind, exc, None)
        self.emit(E_ERR, packed, time.time_ns(), encode_error(err), False)

    def _call(
        self,
        packed: int,
        fn: Any,
        inject: tuple[str, int | None] | None,
        kind: str,
        box: list,
    ) -> None:
        """Call the executor with the unpickled (args, kwargs[, uuid]) that `box`
        holds (taken out of it); report."""
        decoded = box.pop()
        try:
            args, kwargs = decoded[0], decoded[1]
            if len(decoded) > 2:  # the executor is handed its Instance (or more)
                ji = WorkerInstance(self, packed, decoded[2], kind, packed >> 32, args, kwargs)
                args, kwargs = _fill_placeholders(args, kwargs, ji)
                for name, pos, what in inject or ():
                    if what == "instance":
                        if _holds(args, kwargs, ji):
                            continue  # a "?" put it there already
                        value: Any = ji
                    elif what == "manager":
                        value = WorkerManager(
                            lambda blob, p=packed: self.emit(E_SCHEDULE, p, time.time_ns(), blob),
                            ji.uuid,
                        )
                    else:
                        value = self.info(ji.uuid)
                    if pos is not None and len(args) >= pos:  # its place in the signature
                        args = (*args[:pos], value, *args[pos:])
                    else:
                        kwargs = {**kwargs, name: value}
            self.current = packed
            try:
                result = fn(*args, **kwargs)
            finally:
                self.current = 0
        except BaseException as exc:  # a failed job, whatever it raised, is a failure
            self._failed(packed, exc)
            return
        del decoded, args, kwargs  # the job's arguments are not kept past the job
        self._send_result(packed, kind, result)

    def _failed(self, packed: int, exc: BaseException) -> None:
        self.emit(E_ERR, packed, time.time_ns(), encode_error(exc), False)

    def _send_result(self, packed: int, kind: str, result: Any) -> None:
        try:
            try:
                out = pickle.dumps(result, protocol=5)
            except Exception:
                # Instances of classes that came by value (defined in the user's
                # script) cannot be pickled by reference here; send them by value.
                out = cloudpickle.dumps(result, protocol=5)
        except Exception as exc:
            err: BaseException = SerializationError(
                f"the result of job {kind!r} cannot be pickled: {type(exc).__name__}: {exc}"
            )
            self._failed(packed, err)
            return
        except BaseException as exc:  # sys.exit() in a __reduce__: the job's outcome
            self._failed(packed, exc)
            return
        del result
        self.emit(E_OK, packed, time.time_ns(), out, False)


def _fill_placeholders(args: tuple, kwargs: dict, ji: WorkerInstance) -> tuple[tuple, dict]:
    """go-job's "?" argument: replaced by the instance the job runs as."""

    def fill(v: Any) -> Any:
        return ji if type(v) is str and v == "?" else v

    return tuple(map(fill, args)), {k: fill(v) for k, v in kwargs.items()}


def _holds(args: tuple, kwargs: dict, ji: WorkerInstance) -> bool:
    """Whether a placeholder already put the instance among the arguments."""
    return any(a is ji for a in args) or any(v is ji for v in kwargs.values())


def finish_process() -> None:
    """Run what a multiprocessing child runs at exit (its finalizers: queues the jobs
    used are flushed, managers' connections closed), when the jobs loaded it."""
    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is not None:
        # What multiprocessing.Process runs in its children before os._exit.
        with contextlib.suppress(BaseException):
            mp_util._exit_function()  # noqa: SLF001 - multiprocessing's own exit step
    logging.shutdown()
