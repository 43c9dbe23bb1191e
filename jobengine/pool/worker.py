"""The worker loop: take tasks from the task ring, run them, publish events.

Runs in a process forked by the supervisor.  Per job it does: decode the args (pickle),
publish STARTED, call the executor, pickle the result, publish OK or ERR.  Executors
arrive once per kind (T_DEFINE, cloudpickle) and are kept by kind id, so a task record
carries only a small id and the arguments.

Owns: the executors it received and the attempt it runs.  Never does: touch the store or
another worker's rings.
"""

from __future__ import annotations

import os
import pickle
import time
import traceback
from typing import Any

import cloudpickle

from ..errors import SerializationError
from ..records import LogLevel, LogMethods
from .channel import (
    E_ERR,
    E_LOG,
    E_OK,
    E_STARTED,
    T_DEFINE,
    T_STOP,
    T_TASK,
    TAG_MASK,
    Channel,
    read_payload,
    write_record,
    write_status,
)

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
    except Exception:
        raw = None
    return pickle.dumps((raw, type(exc).__qualname__, str(exc), tb), protocol=5)


class Worker:
    def __init__(self, index: int, channel: Channel, parent_pid: int):
        self.index = index
        self.channel = channel
        self.parent_pid = parent_pid
        self.executors: dict[int, tuple[Any, str | None, str, float | None]] = {}
        self.mm = channel.mm

    def emit(self, tag: int, a: int, b: int, payload: bytes = b"") -> None:
        ring = self.channel.events
        while not write_record(ring, tag, a, b, payload):
            # The manager is behind: make what we wrote visible, then give it time.
            ring.publish()
            time.sleep(20e-6)
            self._check_parent()
        ring.publish()

    def _check_parent(self) -> None:
        if os.getppid() != self.parent_pid:
            os._exit(3)

    def run(self) -> None:
        tasks = self.channel.tasks
        while True:
            records = tasks.read_many(64)
            if not records:
                if not tasks.wait(PARK_TIMEOUT_S, SPIN_S):
                    self._check_parent()
                continue
            for tag, a, b, payload in records:
                kind = tag & TAG_MASK
                if kind == T_TASK:
                    self._run_task(a, b, read_payload(tag, payload))
                elif kind == T_DEFINE:
                    self.executors[a] = cloudpickle.loads(read_payload(tag, payload))
                elif kind == T_STOP:
                    return

    def _run_task(self, packed: int, kind_id: int, payload: bytes) -> None:
        fn, instance_param, kind, timeout = self.executors[kind_id]
        if timeout is not None:
            start = time.monotonic_ns()
            write_status(self.mm, packed, start, start + int(timeout * 1e9))
        try:
            self._attempt(packed, fn, instance_param, kind, payload)
        finally:
            if timeout is not None:
                write_status(self.mm, 0)

    def _attempt(
        self, packed: int, fn: Any, instance_param: str | None, kind: str, payload: bytes
    ) -> None:
        self.emit(E_STARTED, packed, time.time_ns())
        try:
            decoded = pickle.loads(payload)
            args, kwargs = decoded[0], decoded[1]
            if instance_param is not None:
                ji = WorkerInstance(self, packed, decoded[2], kind, packed >> 32, args, kwargs)
                kwargs = {**kwargs, instance_param: ji}
            result = fn(*args, **kwargs)
        except BaseException as exc:  # a failed job, whatever it raised, is a failure
            self.emit(E_ERR, packed, time.time_ns(), encode_error(exc))
            return
        try:
            try:
                out = pickle.dumps(result, protocol=5)
            except Exception:
                # Instances of classes that came by value (defined in the user's
                # script) cannot be pickled by reference here; send them by value.
                out = cloudpickle.dumps(result, protocol=5)
        except Exception as exc:
            err = SerializationError(
                f"the result of job {kind!r} cannot be pickled: {type(exc).__name__}: {exc}"
            )
            self.emit(E_ERR, packed, time.time_ns(), encode_error(err))
            return
        self.emit(E_OK, packed, time.time_ns(), out)
