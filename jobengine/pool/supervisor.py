"""The supervisor: a single-threaded process that forks, watches, limits and reaps workers.

    manager ==ctl socket (SEQPACKET, pickled messages, fds by SCM_RIGHTS)==> supervisor
      ("config", {max_memory, term_grace, authkey}) + fds: limits to enforce, the
          manager's multiprocessing authkey, and descriptors every worker inherits
      ("spawn", index) + memfd           fork a worker on that channel
      ("kill", index, pid, reason, a)    stop that worker (reason: "cancel", ...)
      ("exit",)                          kill what is left, reap, exit
    supervisor ==> manager (then it rings the manager's doorbell)
      ("born", index, pid, threads)      threads: OS threads the supervisor had at fork
      ("spawn_failed", index, error)     fork failed (out of processes or memory)
      ("died", index, pid, exitcode, signal, reason, a)
          reason: None (it died by itself), "timeout", "memory", "cancel", "stop";
          a: the attempt (handle | attempt << 32) the kill was aimed at, or 0

Why a separate process: forking is only safe from a process without threads (a lock
held by another thread is copied locked), and the manager's process has threads.  The
supervisor is started with subprocess (fork+exec: a fresh interpreter), never forks
while it has a thread, and waits on pidfds, so it needs no SIGCHLD handler.

Limits live here, not in the manager, so a manager busy with Python work cannot delay
them: every TICK the supervisor reads each worker's status (channel.read_status: the
attempt it runs and its deadline) and samples its RSS (psutil).  An attempt past its
deadline, canceled, or running when a stop's grace ends is interrupted: the interrupt
word names it, SIGUSR1 makes the worker raise JobTimeout / JobCanceled inside the job,
and SIGKILL follows after term_grace unless the worker cleared the word (the attempt
ended).  A worker over max_memory is SIGKILLed at once.

Owns: the worker processes (fork, limits, kill, reap).  Never does: start a thread, or
read a job's payload.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import multiprocessing
import os
import select
import signal
import socket
import sys
import time
import traceback

import psutil
import setproctitle

from .channel import (
    ANY_ATTEMPT,
    INTERRUPT_CANCEL,
    INTERRUPT_STOP,
    INTERRUPT_TIMEOUT,
    MAPPING_BYTES,
    RING_CONTROL,
    map_fd,
    read_interrupt,
    read_status,
    write_interrupt,
)
from .control import recv, send, unshield

PR_SET_PDEATHSIG = 1
TICK_S = 0.01
# Kill reasons a worker is first asked to act on (its job is interrupted gracefully).
_INTERRUPTS = {"cancel": INTERRUPT_CANCEL, "timeout": INTERRUPT_TIMEOUT, "stop": INTERRUPT_STOP}


def die_with_parent(parent_pid: int, sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send us `sig` (default SIGKILL) when our parent dies; then
    check it has not died already (then: exit, or act as on `sig`)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:
        if sig == signal.SIGKILL:
            os._exit(3)
        os.kill(os.getpid(), sig)


class Child:
    __slots__ = ("a", "index", "killed_at", "mm", "pid", "pidfd", "proc", "reason")

    def __init__(self, index: int, pid: int, pidfd: int, mm):
        self.index = index
        self.pid = pid
        self.pidfd = pidfd
        self.mm = mm
        self.proc: psutil.Process | None = None
        self.reason: str | None = None  # why we are killing it
        self.a = 0  # the attempt the kill is aimed at
        self.killed_at = 0.0


class Supervisor:
    def __init__(self, ctl: socket.socket, doorbell_fd: int):
        from .channel import attach_doorbell

        self.ctl = ctl
        self.doorbell_fd = doorbell_fd
        self._db_mm, self.doorbell = attach_doorbell(doorbell_fd)
        self.children: dict[int, Child] = {}  # pidfd -> child
        self.by_index: dict[int, Child] = {}
        self.max_memory: int | None = None
        self.term_grace = 1.0
        self.log_level = logging.WARNING  # what workers forward to the manager
        self.inherited: list[int] = []  # descriptors every worker inherits

    def tell(self, msg: tuple) -> None:
        send(self.ctl, msg)
        self.doorbell.ring(RING_CONTROL)

    # -- workers -----------------------------------------------------------------------
    def spawn(self, index: int, fd: int) -> None:
        # Reported with "born": the proof, checked by the tests, that every fork happens
        # in a process with a single OS thread.
        threads = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 1
        gc.collect()
        gc.freeze()  # keep the parent's pages shared copy-on-write in the child
        try:
            pid = os.fork()
        except OSError as e:  # out of processes or memory: report it, stay alive
            gc.unfreeze()
            os.close(fd)
            self.tell(("spawn_failed", index, f"{type(e).__name__}: {e}"))
            return
        if pid == 0:  # the worker: its real exit status, never a silent 0
            status = 70  # EX_SOFTWARE: the worker's own code failed
            try:
                status = self._become_worker(index, fd)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(status)
        gc.unfreeze()
        mm = map_fd(fd, MAPPING_BYTES)
        os.close(fd)
        child = Child(index, pid, os.pidfd_open(pid), mm)
        with contextlib.suppress(psutil.Error):
            child.proc = psutil.Process(pid)
        self.children[child.pidfd] = child
        self.by_index[index] = child
        self.tell(("born", index, pid, threads))

    def _become_worker(self, index: int, fd: int) -> int:
        me = os.getppid()
        die_with_parent(me)
        # SIGINT and SIGTERM sent to the whole process group (Ctrl-C, systemd, a shell's
        # job control) are the manager's to act on: it stops in order, giving running
        # jobs their grace.  A worker is stopped by the supervisor only (SIGUSR1, then
        # SIGKILL), or dies with the manager (PR_SET_PDEATHSIG).
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.ctl.close()
        for pidfd in self.children:
            os.close(pidfd)
        name = f"jobengine worker {index}"
        setproctitle.setproctitle(name)  # what ps and top show
        multiprocessing.current_process().name = name  # what logging and jobs see
        from .channel import Channel
        from .inherit import set_inherited
        from .worker import Worker, finish_process

        set_inherited(self.inherited)
        channel = Channel(fd, self.doorbell, "worker")
        status = Worker(index, channel, me, self.log_level).run()
        finish_process()
        return status

    def reap(self, pidfd: int) -> None:
        child = self.children.pop(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(child.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        exitcode, sig = (code, None) if code >= 0 else (None, -code)
        if self.by_index.get(child.index) is child:
            del self.by_index[child.index]
        child.mm.close()
        self.tell(("died", child.index, child.pid, exitcode, sig, child.reason, child.a))

    def kill(self, child: Child, reason: str, a: int = 0) -> None:
        """Stop the attempt `a` (0: whatever runs) on child: interrupt it gracefully
        (the interrupt word, then SIGUSR1: the job gets JobCanceled or JobTimeout
        raised inside it), then SIGKILL if it has not ended after term_grace (see
        tick).  An attempt over the memory limit is killed at once."""
        if child.reason is not None:
            return
        child.reason, child.a, child.killed_at = reason, a, time.monotonic()
        code = _INTERRUPTS.get(reason)
        if code is None or self.term_grace <= 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGKILL)
            return
        write_interrupt(child.mm, a or ANY_ATTEMPT, code)
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGUSR1)

    def tick(self) -> None:
        now_ns = time.monotonic_ns()
        now = time.monotonic()
        for child in list(self.children.values()):
            if child.reason is not None:
                if child.reason in _INTERRUPTS and read_interrupt(child.mm)[0] == 0:
                    child.reason, child.a = None, 0  # it ended gracefully: no kill
                elif now - child.killed_at >= self.term_grace:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child.pid, signal.SIGKILL)
                continue
            a, _start, deadline = read_status(child.mm)
            if a and deadline and now_ns >= deadline and read_status(child.mm)[0] == a:
                self.kill(child, "timeout", a)
                continue
            if self.max_memory and child.proc is not None:
                try:
                    rss = child.proc.memory_info().rss
                except psutil.Error:
                    continue
                if rss > self.max_memory:
                    # The status names the attempt only for jobs with a timeout; the
                    # manager blames the attempt the worker was running otherwise.
                    self.kill(child, "memory", read_status(child.mm)[0])

    # -- the loop ----------------------------------------------------------------------
    def handle(self, msg: tuple, fds: list[int]) -> bool:
        op = msg[0]
        if op == "spawn":
            self.spawn(msg[1], fds[0])
        elif op == "kill":
            _, index, pid, reason, a = msg
            child = self.by_index.get(index)
            if child is not None and child.pid == pid:
                self.kill(child, reason, a)
        elif op == "config":
            cfg = msg[1]
            self.max_memory = cfg.get("max_memory")
            self.term_grace = cfg.get("term_grace", self.term_grace)
            self.log_level = cfg.get("log_level", logging.WARNING)
            self.inherited = list(fds)
            if cfg.get("authkey"):
                # Workers inherit it: multiprocessing.Manager() proxies made by the
                # manager's process authenticate from its workers, as from a Pool's.
                multiprocessing.current_process().authkey = cfg["authkey"]
        elif op == "exit":
            return False
        return True

    def run(self) -> None:
        while True:
            # With workers alive, wake every TICK: a deadline can start with any job.
            timeout = TICK_S if self.children else None
            # poll, not select: the descriptors keep the numbers they had in the
            # manager's process, which may hold more than select's 1024
            poller = select.poll()
            ctl = self.ctl.fileno()
            for fd in (ctl, *self.children):
                poller.register(fd, select.POLLIN)
            ready = poller.poll(None if timeout is None else timeout * 1000)
            for fd, _events in ready:
                if fd == ctl:
                    try:
                        msg, fds = recv(self.ctl)
                    except (EOFError, ConnectionError):
                        return self.shutdown()
                    if not self.handle(msg, fds):
                        return self.shutdown()
                elif fd in self.children:
                    self.reap(fd)
            if self.children:
                self.tick()

    def shutdown(self) -> None:
        for child in list(self.children.values()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGKILL)
        for pidfd in list(self.children):
            with contextlib.suppress(OSError):
                self.reap(pidfd)


def main() -> None:
    ctl_fd, doorbell_fd, parent_pid = (int(x) for x in sys.argv[1:4])
    die_with_parent(parent_pid)
    setproctitle.setproctitle(f"jobengine supervisor (manager pid {parent_pid})")
    # Ctrl-C and SIGTERM go to the whole process group; the manager decides how to
    # stop (and the kernel ends us if the manager dies: PR_SET_PDEATHSIG).
    unshield()
    ctl = socket.socket(fileno=ctl_fd)
    Supervisor(ctl, doorbell_fd).run()


if __name__ == "__main__":
    main()
