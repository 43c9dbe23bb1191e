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
import os
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
    KeyboardInterrupt (SIGINT) or exit with 128 + the signal number (SIGTERM).

    Only in the process that installed them: a process forked from it (a
    multiprocessing or concurrent.futures worker, a plain os.fork()) gets the handlers
    it had before back as it starts (_restore_in_child), so it dies of SIGTERM as it
    would without jobengine (Pool.terminate() counts on that) and never tries to stop
    a copy of a manager whose threads did not come with it."""

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
        if self._old:
            _installed.add(self)

    def restore(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        self._put_back()

    def _put_back(self) -> None:
        for sig, old in self._old.items():
            if signal.getsignal(sig) == self._on_signal:
                signal.signal(sig, old)
        self._old = {}
        _installed.discard(self)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._begin_stop()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)


_installed: set[SignalStop] = set()  # those whose handlers are in place in this process


def _restore_in_child() -> None:
    """os.fork() child: the handlers each SignalStop replaced, back (the forking thread
    is the child's main thread, where signal.signal works)."""
    for stop in list(_installed):
        try:
            stop._put_back()  # noqa: SLF001 - its own class, at module level
        except (ValueError, OSError):  # pragma: no cover - not the main interpreter
            _installed.discard(stop)


os.register_at_fork(after_in_child=_restore_in_child)


__all__ = ["SIGNAL_SLICE_S", "SignalStop", "join", "start_thread", "user_code", "wait_for"]
