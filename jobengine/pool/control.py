"""The control socket between the manager and the supervisor: pickled messages, and
file descriptors passed alongside (SCM_RIGHTS) on a SEQPACKET socket, so message
boundaries hold without framing.  Also how helper processes are started, shielded
from signals sent to the whole process group.

Owns: the message framing.  Never does: interpret a message."""

from __future__ import annotations

import pickle
import signal
import socket
import subprocess
from typing import Any

MAX_FDS = 64  # descriptors one message may carry


def send(sock: socket.socket, msg: tuple, fds: list[int] | None = None) -> None:
    data = pickle.dumps(msg)
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


def recv(sock: socket.socket) -> tuple[tuple, list[int]]:
    """One message; EOFError when the peer closed the socket."""
    data, fds, _flags, _addr = socket.recv_fds(sock, 1 << 16, MAX_FDS)
    if not data:
        raise EOFError
    return pickle.loads(data), fds


GROUP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def popen_shielded(argv: list[str], **kwargs: Any) -> subprocess.Popen:
    """Start a helper process (the supervisor, a store writer) with SIGINT and SIGTERM
    blocked, so one sent to the whole process group while it starts up cannot kill it
    before it ignores them (unshield()); such a signal stays pending, then is dropped."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, GROUP_SIGNALS)
    try:
        return subprocess.Popen(argv, **kwargs)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def unshield() -> None:
    """In a helper started by popen_shielded: ignore SIGINT and SIGTERM (the manager
    decides when it stops), then let signals in again."""
    for sig in GROUP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, GROUP_SIGNALS)
