"""The control socket between the manager and the supervisor: pickled messages, and
file descriptors passed alongside (SCM_RIGHTS) on a SEQPACKET socket, so message
boundaries hold without framing.

Owns: the message framing.  Never does: interpret a message."""

from __future__ import annotations

import pickle
import socket

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
