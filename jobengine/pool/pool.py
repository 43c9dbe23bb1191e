"""The manager's side of the pool: the supervisor process, the worker table, resizing.

Owned by the engine thread: every method here runs on it, except `info()` (a snapshot
for any thread) and `start()`/`close()` (called by the manager before the engine thread
starts and after it ends).

Owns: the supervisor process handle, the control socket and the worker slots.  Never
does: decide what a worker runs (scheduler.py) or what a death means for a job
(engine.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass

import psutil

from ..instance import Instance
from .channel import RING_CONTROL, T_INIT, T_STOP, Channel, new_doorbell, write_record
from .control import popen_shielded, recv, send

__all__ = ["RING_CONTROL", "Pool", "WorkerEvent", "WorkerInfo", "WorkerSlot"]


@dataclass(frozen=True)
class WorkerInfo:
    """A snapshot of one worker: .index, .pid, .state ("starting", "idle", "busy",
    "retiring"), .current (uuid of the instance it runs, or None), .rss (bytes),
    .cpu_percent (since the previous snapshot), .jobs (attempts it has finished)."""

    index: int
    pid: int | None
    state: str
    current: str | None
    rss: int | None
    cpu_percent: float | None
    jobs: int


@dataclass(frozen=True)
class WorkerEvent:
    """A worker's birth or death: .kind ("born" or "died"), .index, .pid, .time_ns
    (Unix ns), and for deaths .exitcode or .signal (one of them is None)."""

    kind: str
    index: int
    pid: int
    time_ns: int
    exitcode: int | None = None
    signal: int | None = None
    reason: str | None = None  # why the supervisor killed it: timeout, memory, cancel, stop

    @property
    def cause(self) -> str | None:
        """For a death: "signal N" or "exit code N", plus the kill reason if any."""
        if self.kind != "died":
            return None
        how = f"signal {self.signal}" if self.signal is not None else f"exit code {self.exitcode}"
        return f"{how} ({self.reason})" if self.reason else how


class WorkerSlot:
    """The manager's record of one worker process."""

    __slots__ = (
        "channel",
        "dispatched",
        "index",
        "inflight",
        "jobs",
        "kinds",
        "pid",
        "proc",
        "reported",
        "retiring",
        "running",
    )

    def __init__(self, index: int, channel: Channel):
        self.index = index
        self.channel = channel
        self.pid: int | None = None
        self.proc: psutil.Process | None = None
        self.inflight: dict[int, Instance] = {}  # handle -> instance, in dispatch order
        self.running: Instance | None = None  # the one it has started
        self.kinds: set[int] = set()  # kind ids whose executor it has received
        self.retiring = False
        self.jobs = 0  # attempts finished
        self.dispatched = 0  # attempts handed over
        self.reported = False  # it has published an event: it came up and works


class Pool:
    """init_blob: cloudpickled (initializer, initargs), the first record every new
    worker reads, or None.  doorbell: the engine's (fd, mapping, Doorbell)."""

    def __init__(self, init_blob: bytes | None = None, doorbell: tuple | None = None):
        self.init_blob = init_blob
        # (fd, mapping, Doorbell): the engine's, shared with its store writer; else new
        self.doorbell_fd, self._doorbell_mm, self.doorbell = doorbell or new_doorbell()
        self.workers: dict[int, WorkerSlot] = {}
        self.target = 0
        self.rings: list = []  # event rings of live workers, for Doorbell.wait
        # task rings of the workers that take new work (Engine.make_way watches them)
        self.task_rings: list = []
        self._ctl: socket.socket | None = None
        self._proc: subprocess.Popen | None = None
        self.fork_thread_counts: list[int] = []  # supervisor threads at each fork
        self.events: deque[WorkerEvent] = deque(maxlen=10_000)  # births and deaths

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, config: dict | None = None, fds: list[int] | None = None) -> None:
        """Start the supervisor; config and fds (descriptors every worker inherits,
        pool/inherit.py) go to it first."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ)
        # The workers must import what the manager's process can (executors pickled by
        # reference name their module).
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self._proc = popen_shielded(
            [
                sys.executable,
                "-m",
                "jobengine.pool.supervisor",
                str(theirs.fileno()),
                str(self.doorbell_fd),
                str(os.getpid()),
            ],
            pass_fds=(theirs.fileno(), self.doorbell_fd),
            env=env,
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self._ctl = ours
        send(ours, ("config", config or {}), fds or None)
        ours.setblocking(False)

    def close(self, timeout: float = 5.0) -> None:
        """Tell the supervisor to exit (it kills what is left) and wait for it."""
        if self._proc is None:
            return
        try:
            self._ctl.setblocking(True)
            send(self._ctl, ("exit",))
        except OSError:
            pass
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._ctl.close()
        for w in self.workers.values():
            w.channel.close()
        self.workers.clear()
        self.rings = []
        self.task_rings = []
        self._proc = None

    # -- workers ---------------------------------------------------------------------
    def spawn(self, index: int) -> WorkerSlot:
        channel = Channel.create(index, self.doorbell)
        if self.init_blob is not None:  # before anything else: the ring is empty
            write_record(channel.tasks, T_INIT, 0, 0, self.init_blob)
            channel.tasks.publish()
        w = WorkerSlot(index, channel)
        self._ctl.setblocking(True)
        try:
            send(self._ctl, ("spawn", index), [channel.fd])
        finally:
            self._ctl.setblocking(False)
        channel.close()  # the supervisor has its own copy of the fd; our mapping stays
        self.workers[index] = w
        self._refresh_rings()
        return w

    def retire(self, w: WorkerSlot) -> None:
        """Let the worker finish what it holds, then exit (STOP is queued behind it)."""
        if w.retiring:
            return
        w.retiring = True
        self._refresh_rings()
        ring = w.channel.tasks
        while not ring.push(T_STOP, 0, 0):
            time.sleep(50e-6)

    def kill(self, w: WorkerSlot, reason: str, a: int = 0) -> None:
        """Have the supervisor stop the worker (SIGTERM, then SIGKILL after the grace)."""
        if w.pid is not None:
            self._ctl.setblocking(True)
            try:
                send(self._ctl, ("kill", w.index, w.pid, reason, a))
            finally:
                self._ctl.setblocking(False)

    def _refresh_rings(self) -> None:
        self.rings = [w.channel.events for w in self.workers.values()]
        self.task_rings = [w.channel.tasks for w in self.workers.values() if not w.retiring]

    def remove(self, w: WorkerSlot) -> None:
        self.workers.pop(w.index, None)
        self._refresh_rings()

    def poll(self) -> list[tuple]:
        """Messages from the supervisor that have arrived ("born" / "died")."""
        out = []
        while True:
            try:
                msg, _fds = recv(self._ctl)
            except BlockingIOError:
                return out
            except (EOFError, ConnectionError):
                out.append(("lost",))
                return out
            if msg[0] == "born":
                self.events.append(WorkerEvent("born", msg[1], msg[2], time.time_ns()))
                self.fork_thread_counts.append(msg[3])
                w = self.workers.get(msg[1])
                if w is not None:
                    w.pid = msg[2]
                    try:
                        w.proc = psutil.Process(w.pid)
                        w.proc.cpu_percent(None)  # starts the CPU accounting window
                    except psutil.Error:
                        w.proc = None
            elif msg[0] == "died":
                self.events.append(
                    WorkerEvent("died", msg[1], msg[2], time.time_ns(), msg[3], msg[4], msg[5])
                )
            out.append(msg)

    def free_index(self) -> int:
        i = 0
        while i in self.workers:
            i += 1
        return i

    def info(self) -> list[WorkerInfo]:
        out = []
        for w in sorted(list(self.workers.values()), key=lambda w: w.index):
            rss = cpu = None
            if w.proc is not None:
                try:
                    with w.proc.oneshot():
                        rss = w.proc.memory_info().rss
                        cpu = w.proc.cpu_percent(None)
                except psutil.Error:
                    pass
            running = w.running
            if w.pid is None:
                state = "starting"
            elif w.retiring:
                state = "retiring"
            else:
                state = "busy" if running is not None else "idle"
            out.append(
                WorkerInfo(
                    w.index,
                    w.pid,
                    state,
                    running.uuid_str if running is not None else None,
                    rss,
                    cpu,
                    w.jobs,
                )
            )
        return out
