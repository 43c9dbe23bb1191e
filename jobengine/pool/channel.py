"""The wire between the manager and one worker: two SPSC rings in one memfd mapping.

    manager (engine thread)                      worker process
      tasks  Ring (producer)  --- T_* records -->  tasks  Ring (consumer, parks on the ring)
      events Ring (consumer)  <-- E_* records ---  events Ring (producer, rings the doorbell)

The manager creates the memfd, formats both rings, and hands the fd to the supervisor,
which forks the worker with it; nothing is ever named in /dev/shm, so nothing leaks when
a process dies.  Record fields: a = handle | attempt << 32 for per-instance records,
b = kind id (tasks) or a time.time_ns() timestamp (events).  A payload larger than a
ring record may carry travels through a spill file (FLAG_LARGE: the payload is its path).

Owns: the record tags, the mapping layout and spill files.  Never does: interpret a
record's payload.
"""

from __future__ import annotations

import mmap
import os
import pickle
import struct
import tempfile
from typing import Any

import cloudpickle

from .._core import DOORBELL_SIZE, RING_HEADER, Doorbell, Ring

# manager -> worker
T_DEFINE = 1  # a = kind id; payload = executor_blob(...)
T_TASK = 2  # a = handle | attempt << 32; b = kind id; payload = pickled (args, kwargs[, uuid])
T_STOP = 3  # finish what is queued before this record, then exit 0
T_INIT = 4  # payload = cloudpickle((initializer, initargs)): run once, before any task
T_FORGET = 5  # a = kind id: drop that executor (its job is gone)
# worker -> manager
E_STARTED = 16  # a = handle | attempt << 32; b = start time
E_OK = 17  # b = end time; payload = pickled result
E_ERR = 18  # b = end time; payload = pickled (exception bytes | None, type, message, traceback)
E_LOG = 19  # b = time; payload = level (1 byte) + utf-8 message
E_INIT_ERR = 20  # the initializer raised; payload as E_ERR; the worker exits next
E_SCHEDULE = 21  # a = the asking attempt; payload = a follow-up job request (follow_up.py)
E_PYLOG = 22  # a = the attempt running (or 0); payload = a logging record (logbridge.py)

# Doorbell flags: why the engine was woken
# (flag 1, Doorbell.ring's default: new instances, a resize, a clock move)
RING_CONTROL = 2  # a supervisor message waits on the control socket

FLAG_LARGE = 0x100
TAG_MASK = 0xFF

RING_BYTES = 1 << 20  # per direction: 256 KiB records fit inline, larger ones spill
REGION = RING_HEADER + RING_BYTES
# After the two rings, the worker's status, which the supervisor reads to enforce
# timeouts: (running attempt a = handle | attempt << 32 or 0, start, deadline or 0), the
# times on CLOCK_MONOTONIC, which every process shares.
STATUS_OFFSET = 2 * REGION
STATUS = struct.Struct("=QQQ")
# Then the interrupt word, written by the supervisor before it sends SIGUSR1: (the
# attempt to interrupt, or ANY_ATTEMPT; the reason), cleared by the worker once that
# attempt has ended, which tells the supervisor not to follow up with SIGKILL.
INTERRUPT_OFFSET = STATUS_OFFSET + STATUS.size
INTERRUPT = struct.Struct("=QQ")
ANY_ATTEMPT = 1 << 63
INTERRUPT_CANCEL, INTERRUPT_TIMEOUT, INTERRUPT_STOP = 1, 2, 3
MAPPING_BYTES = STATUS_OFFSET + 64
DEADLINE_MAX = (1 << 63) - 1  # a deadline past this is "never"
DOORBELL_BYTES = DOORBELL_SIZE

SPILL_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else None


def pack(handle: int, attempt: int) -> int:
    return handle | (attempt << 32)


def new_memfd(name: str, size: int) -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    os.ftruncate(fd, size)
    return fd


def map_fd(fd: int, size: int) -> mmap.mmap:
    return mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)


def new_doorbell() -> tuple[int, mmap.mmap, Doorbell]:
    fd = new_memfd("jobengine-doorbell", DOORBELL_BYTES)
    mm = map_fd(fd, DOORBELL_BYTES)
    return fd, mm, Doorbell(mm, format=True)


def attach_doorbell(fd: int) -> tuple[mmap.mmap, Doorbell]:
    mm = map_fd(fd, DOORBELL_BYTES)
    return mm, Doorbell(mm)


class Channel:
    """One side's view of a worker's two rings.  side="manager" or "worker"."""

    __slots__ = ("events", "fd", "mm", "tasks")

    def __init__(self, fd: int, doorbell: Doorbell, side: str, format: bool = False):
        self.fd = fd
        self.mm = map_fd(fd, MAPPING_BYTES)
        view = memoryview(self.mm)
        task_mem, event_mem = view[:REGION], view[REGION:]
        if side == "manager":
            self.tasks = Ring(task_mem, None, format)
            self.events = Ring(event_mem, doorbell, format)
        else:
            self.tasks = Ring(task_mem, None)
            self.events = Ring(event_mem, doorbell)

    @classmethod
    def create(cls, index: int | str, doorbell: Doorbell) -> Channel:
        """A new channel; index names its memfd (a worker's index, or a name)."""
        name = f"jobengine-worker-{index}" if isinstance(index, int) else f"jobengine-{index}"
        fd = new_memfd(name, MAPPING_BYTES)
        return cls(fd, doorbell, "manager", format=True)

    def close(self) -> None:
        # The Rings hold buffer exports of the mapping; the mapping itself is unmapped
        # when the last of them is collected.  Only the fd is ours to close now.
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def write_status(mm: mmap.mmap, packed: int, start_ns: int = 0, deadline_ns: int = 0) -> None:
    deadline_ns = min(deadline_ns, DEADLINE_MAX)
    # The deadline is stored before the attempt id so a reader that sees the id sees its
    # deadline too (x86 stores are ordered; the reader re-checks the id before it acts).
    STATUS.pack_into(mm, STATUS_OFFSET, 0, start_ns, deadline_ns)
    if packed:
        STATUS.pack_into(mm, STATUS_OFFSET, packed, start_ns, deadline_ns)


def read_status(mm: mmap.mmap) -> tuple[int, int, int]:
    return STATUS.unpack_from(mm, STATUS_OFFSET)


def write_interrupt(mm: mmap.mmap, target: int, reason: int) -> None:
    INTERRUPT.pack_into(mm, INTERRUPT_OFFSET, target, reason)


def read_interrupt(mm: mmap.mmap) -> tuple[int, int]:
    return INTERRUPT.unpack_from(mm, INTERRUPT_OFFSET)


def write_record(ring: Ring, tag: int, a: int, b: int, payload: bytes) -> bool:
    """Write one record (unpublished), spilling a large payload to a file.  False when
    the ring is full (nothing written, no file left behind)."""
    if len(payload) <= ring.max_payload:
        return ring.write(tag, a, b, payload)
    fd, path = tempfile.mkstemp(prefix="jobengine-spill-", dir=SPILL_DIR)
    with os.fdopen(fd, "wb") as f:
        f.write(payload)
    if ring.write(tag | FLAG_LARGE, a, b, path.encode()):
        return True
    os.unlink(path)
    return False


def read_payload(tag: int, payload: bytes) -> bytes:
    """The real payload of a record read from a ring (reads and removes a spill file)."""
    if not tag & FLAG_LARGE:
        return payload
    path = payload.decode()
    try:
        with open(path, "rb") as f:
            return f.read()
    finally:
        os.unlink(path)


def executor_blob(
    kind: str, executor: Any, inject: tuple[str, int | None] | None, timeout: float | None
) -> bytes:
    """How an executor travels to a worker (T_DEFINE): the plain fields outside, so a
    worker that cannot load the executor itself can still say which job and module.
    inject: (the parameter that receives the Instance, its positional index or None
    for keyword), or None."""
    module = getattr(executor, "__module__", None) or getattr(type(executor), "__module__", None)
    return pickle.dumps((kind, module, inject, timeout, dumps_by_reference(executor)), protocol=5)


def dumps_by_reference(obj: Any) -> bytes:
    """Pickle obj as the stdlib does (functions and classes by reference: the worker
    imports their module, so tracebacks show their source lines); only what plain
    pickle cannot carry (lambdas, closures, the user's script's own functions and
    classes, which workers cannot import by name) goes by value, with cloudpickle."""
    try:
        raw = pickle.dumps(obj, protocol=5)
    except Exception:
        return cloudpickle.dumps(obj, protocol=5)
    if raw.find(b"__main__") != -1:
        return cloudpickle.dumps(obj, protocol=5)
    return raw
