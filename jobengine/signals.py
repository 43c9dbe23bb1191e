"""SIGINT / SIGTERM: stop a manager in order, then behave as the signal would have.

Owns: installing and restoring the two handlers for one manager.  By default they are
installed only in the main thread of a program that is not interactive (a `python -i`
prompt, IPython or Jupyter keep Ctrl-C for interrupting what the user waits for, not
the manager), and only over the default handlers, so an application's own handlers
win.  Also: jobengine's own threads block SIGINT and SIGTERM (start_thread), so the
kernel delivers them to a thread that can act on them.  Never does: stop anything
itself (it calls the stop function it is given).
"""

from __future__ import annotations

import builtins
import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

_DELIVERED_TO_MAIN = {signal.SIGINT, signal.SIGTERM}

# How often a wait in the main thread wakes to let pending signal handlers run.
SIGNAL_SLICE_S = 0.2


def wait_for(condition: threading.Condition, predicate: Callable[[], bool],
             timeout: float | None = None) -> bool:  # fmt: skip
    """condition.wait_for(predicate, timeout) (condition held), except that without a
    timeout the main thread waits in SIGNAL_SLICE_S slices.  Python runs signal handlers
    only in the main thread, and a lock wait wakes for one only if the signal interrupts
    that wait itself: one that lands just before the wait starts (or on another thread)
    would leave Ctrl-C or SIGTERM pending until the wait ended by itself."""
    if timeout is not None or threading.current_thread() is not threading.main_thread():
        return condition.wait_for(predicate, timeout)
    while not condition.wait_for(predicate, SIGNAL_SLICE_S):
        pass
    return True


def join(thread: threading.Thread) -> None:
    """thread.join(), in slices in the main thread (see wait_for)."""
    if threading.current_thread() is not threading.main_thread():
        thread.join()
        return
    while thread.is_alive():
        thread.join(SIGNAL_SLICE_S)


def start_thread(thread: threading.Thread) -> threading.Thread:
    """thread.start(), with SIGINT and SIGTERM blocked in the new thread (it inherits
    the mask it is started with).  The kernel hands a signal sent to the process to any
    thread that does not block it; Python runs handlers only in the main thread, and a
    main thread blocked in a lock wait (Future.result()) wakes for the handler only if
    the signal lands on it.  Left to chance, Ctrl-C or SIGTERM would now and then do
    nothing at all until the main thread woke by itself."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _DELIVERED_TO_MAIN)
    try:
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    return thread


@contextlib.contextmanager
def user_code() -> Iterator[None]:
    """Around a user's handler on one of those threads: signals unblocked again, so a
    process it starts does not inherit SIGINT and SIGTERM blocked."""
    old = signal.pthread_sigmask(signal.SIG_UNBLOCK, _DELIVERED_TO_MAIN)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class SignalStop:
    """On SIGINT or SIGTERM, call `begin_stop()` (a graceful stop), then raise
    KeyboardInterrupt (SIGINT) or exit with 128 + the signal number (SIGTERM)."""

    def __init__(self, begin_stop: Callable[[], None]):
        self._begin_stop = begin_stop
        self._old: dict[int, Any] = {}

    @staticmethod
    def wanted() -> bool:
        """Whether to install the handlers by default (Manager(handle_signals=None)):
        in a program, yes; at an interactive prompt, no."""
        interactive = (
            sys.flags.interactive
            or sys.flags.inspect
            or hasattr(sys, "ps1")
            or hasattr(builtins, "get_ipython")  # IPython and Jupyter
        )
        return not interactive

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, default in (
            (signal.SIGINT, signal.default_int_handler),
            (signal.SIGTERM, signal.SIG_DFL),
        ):
            if signal.getsignal(sig) is default:
                self._old[sig] = default
                signal.signal(sig, self._on_signal)

    def restore(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, old in self._old.items():
            if signal.getsignal(sig) == self._on_signal:
                signal.signal(sig, old)
        self._old = {}

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._begin_stop()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)


__all__ = ["SIGNAL_SLICE_S", "SignalStop", "join", "start_thread", "user_code", "wait_for"]
