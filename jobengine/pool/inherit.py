"""Objects a worker inherits, as a multiprocessing child does: Manager(initargs=...).

multiprocessing lets a spawned child inherit its parent's Queues, Locks, Events and
Pipes (never send them later): it pickles them while "spawning", their semaphores by
name and their file descriptors as numbers the child will have.  jobengine's workers
are forked by the supervisor, a separate interpreter, so the manager pickles the
initializer's arguments the same way, sends the file descriptors to the supervisor once
(SCM_RIGHTS), and every worker, forked from it, holds them.

Owns: that pickling, and the table of inherited descriptors in a worker.  Never does:
pickle job arguments (jobs take what a ProcessPoolExecutor's jobs take: picklable
values and multiprocessing.Manager() proxies).
"""

from __future__ import annotations

import io
import os
from collections import ChainMap
from multiprocessing import context
from multiprocessing.reduction import ForkingPickler
from typing import Any

import cloudpickle

_fds: list[int] = []  # in a worker: the inherited descriptors, in the order pickled


class InheritedFd:
    """Stands for the n-th descriptor sent along (multiprocessing's DupFd protocol:
    the child calls detach() to get a descriptor of its own)."""

    def __init__(self, n: int):
        self.n = n

    def detach(self) -> int:
        return os.dup(_fds[self.n])


class _Spawning:
    """What multiprocessing asks of a process being spawned while it pickles for it."""

    DupFd = InheritedFd

    def __init__(self) -> None:
        self.fds: list[int] = []

    def duplicate_for_child(self, fd: int) -> int:
        self.fds.append(fd)
        return len(self.fds) - 1


def dumps_for_workers(obj: Any) -> tuple[bytes, list[int]]:
    """Pickle obj as multiprocessing pickles for a spawned child (its reducers for
    Connections, sockets and the like, while "spawning"), with cloudpickle for code;
    return the bytes and the descriptors that must travel with them."""
    spawning = _Spawning()
    buf = io.BytesIO()

    class Pickler(cloudpickle.CloudPickler):
        # multiprocessing's reducers first (a ForkingPickler's table holds them), then
        # cloudpickle's.  (A class attribute: the C pickler reads it at __init__.)
        dispatch_table = ChainMap(
            ForkingPickler(io.BytesIO()).dispatch_table, cloudpickle.CloudPickler.dispatch_table
        )

    pickler = Pickler(buf, protocol=5)
    context.set_spawning_popen(spawning)
    try:
        pickler.dump(obj)
    finally:
        context.set_spawning_popen(None)
    return buf.getvalue(), spawning.fds


def set_inherited(fds: list[int]) -> None:
    """In a worker: the descriptors the supervisor received, in the order pickled."""
    _fds[:] = fds


__all__ = ["InheritedFd", "dumps_for_workers", "set_inherited"]
