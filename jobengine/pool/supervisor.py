"""The supervisor: a single-threaded process that forks, watches and reaps workers.

    manager ==ctl socket (SEQPACKET, pickled messages, fds by SCM_RIGHTS)==> supervisor
      ("spawn", index) + memfd        fork a worker on that channel
      ("kill", index, pid)            SIGKILL that worker (if it is still that pid)
      ("exit",)                       kill what is left, reap, exit
    supervisor ==> manager (then it rings the manager's doorbell)
      ("born", index, pid, threads)  threads: OS threads the supervisor had when it forked
      ("died", index, pid, exitcode, signal)

Why a separate process: forking is only safe from a process without threads (a lock
held by another thread is copied locked), and the manager's process has threads.  The
supervisor is started with subprocess (fork+exec: a fresh interpreter), never forks
while it has a thread, and waits on pidfds, so it needs no SIGCHLD handler.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import select
import signal
import socket
import sys

from .channel import RING_CONTROL
from .control import recv, send

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGKILL us when our parent dies; then check it has not already."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:
        os._exit(3)


class Supervisor:
    def __init__(self, ctl: socket.socket, doorbell_fd: int):
        from .channel import attach_doorbell

        self.ctl = ctl
        self.doorbell_fd = doorbell_fd
        self._db_mm, self.doorbell = attach_doorbell(doorbell_fd)
        self.workers: dict[int, tuple[int, int]] = {}  # pidfd -> (index, pid)
        self.by_index: dict[int, int] = {}  # index -> pid

    def tell(self, msg: tuple) -> None:
        send(self.ctl, msg)
        self.doorbell.ring(RING_CONTROL)

    def spawn(self, index: int, fd: int) -> None:
        # Reported with "born": the proof, checked by the tests, that every fork happens
        # in a process with a single OS thread.
        threads = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 1
        gc.collect()
        gc.freeze()  # keep the parent's pages shared copy-on-write in the child
        pid = os.fork()
        if pid == 0:  # the worker
            try:
                self._become_worker(index, fd)
            finally:
                os._exit(0)
        gc.unfreeze()
        os.close(fd)
        pidfd = os.pidfd_open(pid)
        self.workers[pidfd] = (index, pid)
        self.by_index[index] = pid
        self.tell(("born", index, pid, threads))

    def _become_worker(self, index: int, fd: int) -> None:
        me = os.getppid()
        die_with_parent(me)
        self.ctl.close()
        for pidfd in self.workers:
            os.close(pidfd)
        from .channel import Channel
        from .worker import Worker

        channel = Channel(fd, self.doorbell, "worker")
        Worker(index, channel, me).run()

    def reap(self, pidfd: int) -> None:
        index, pid = self.workers.pop(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        exitcode, sig = (code, None) if code >= 0 else (None, -code)
        if self.by_index.get(index) == pid:
            del self.by_index[index]
        self.tell(("died", index, pid, exitcode, sig))

    def kill(self, index: int, pid: int) -> None:
        if self.by_index.get(index) == pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def run(self) -> None:
        while True:
            ready, _, _ = select.select([self.ctl, *self.workers], [], [])
            for r in ready:
                if r is self.ctl:
                    try:
                        msg, fds = recv(self.ctl)
                    except (EOFError, ConnectionError):
                        return self.shutdown()
                    op = msg[0]
                    if op == "spawn":
                        self.spawn(msg[1], fds[0])
                    elif op == "kill":
                        self.kill(msg[1], msg[2])
                    elif op == "exit":
                        return self.shutdown()
                else:
                    self.reap(r)

    def shutdown(self) -> None:
        for _index, pid in list(self.workers.values()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pidfd in list(self.workers):
            with contextlib.suppress(OSError):
                self.reap(pidfd)


def main() -> None:
    ctl_fd, doorbell_fd, parent_pid = (int(x) for x in sys.argv[1:4])
    die_with_parent(parent_pid)
    # Ctrl-C goes to the whole process group; the manager decides how to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ctl = socket.socket(fileno=ctl_fd)
    Supervisor(ctl, doorbell_fd).run()


if __name__ == "__main__":
    main()
