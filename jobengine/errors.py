"""One error hierarchy, rooted at JobEngineError; each failure mode its own type.

Errors about bad input also derive from the builtin a caller would expect (ValueError,
TypeError, KeyError), so `except ValueError` keeps working around jobengine calls.

Owns: every exception type jobengine raises.  Never does: import another jobengine
module."""

from __future__ import annotations

import pickle
from concurrent.futures.process import BrokenProcessPool

try:  # the stdlib's own type, so code that checks for it keeps working
    from concurrent.futures.process import _RemoteTraceback as RemoteTraceback
except ImportError:  # pragma: no cover - present in every CPython 3.x

    class RemoteTraceback(Exception):
        def __init__(self, tb: str):
            self.tb = tb

        def __str__(self) -> str:
            return self.tb


class JobEngineError(Exception):
    """Base of every error jobengine raises."""


class InvalidJobError(JobEngineError, ValueError):
    """A Job definition is invalid (no kind, executor not callable, bad option)."""


class DuplicateJobError(JobEngineError, ValueError):
    """register_job() was given a kind that is already registered."""


class UnknownJobError(JobEngineError, KeyError):
    """No job of this kind is registered."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class InvalidArgumentError(JobEngineError, ValueError):
    """A scheduling option or argument has a bad value (negative delay, NaN, ...)."""


class InvalidArgumentTypeError(JobEngineError, TypeError):
    """A scheduling option has the wrong type (priority as str, ...)."""


class ArgumentBindingError(JobEngineError, TypeError):
    """The arguments do not bind to the executor's signature."""


class SerializationError(JobEngineError, ValueError, pickle.PicklingError):
    """Arguments or a result could not be pickled (or unpickled).  Also a
    pickle.PicklingError, as ProcessPoolExecutor's futures raise."""


class ManagerStateError(JobEngineError, RuntimeError):
    """The manager is not in a state that allows this call (e.g. scheduling after stop)."""


class IllegalTransitionError(JobEngineError, RuntimeError):
    """An instance was asked to make a state transition the state machine forbids."""


class RemoteError(JobEngineError):
    """An executor raised an exception that could not be sent back as itself.

    Carries the remote type name, message and formatted traceback."""

    def __init__(self, type_name: str, message: str, traceback: str = ""):
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.traceback = traceback


class WorkerCrashed(JobEngineError, BrokenProcessPool):
    """The worker process running the job died (exit code or signal in the message).

    Also a concurrent.futures.process.BrokenProcessPool, as ProcessPoolExecutor raises
    in this case; unlike that pool, the manager replaces the worker and keeps serving."""

    def __init__(self, message: str, exitcode: int | None = None, signal: int | None = None):
        super().__init__(message)
        self.exitcode = exitcode
        self.signal = signal

    def __reduce__(self):
        return (type(self), (self.args[0], self.exitcode, self.signal))


class TaskLoadError(JobEngineError, BrokenProcessPool):
    """A worker could not load what the job needs to run: its executor (its module
    cannot be imported there) or its arguments (they cannot be unpickled there).
    .module names the module when it is known.  A BrokenProcessPool, as the stdlib
    pool raises when a task cannot be read by a worker."""

    def __init__(self, message: str, module: str | None = None):
        super().__init__(message)
        self.module = module

    def __reduce__(self):
        return (type(self), (self.args[0], self.module))


class ResultDecodeError(SerializationError, BrokenProcessPool):
    """A job's result reached the manager but could not be unpickled there.  A
    SerializationError, and a BrokenProcessPool as in ProcessPoolExecutor."""


class InitializerError(JobEngineError, BrokenProcessPool):
    """Manager(initializer=...) raised in a worker.  The manager is broken from then on,
    as ProcessPoolExecutor is: instances not yet run fail with this error and new
    submissions raise it (an initializer that fails once fails in every worker, so
    respawning would loop)."""


class JobHandlingError(JobEngineError):
    """The engine could not handle this instance (the message names what failed: a
    backoff or jitter callable that raised, a payload it could not write...).  Only
    that instance fails; the manager goes on."""


class EngineFailedError(ManagerStateError):
    """The engine thread itself failed: every instance it still held fails with this
    error (its __cause__ is the failure), and stop(), wait() and the context manager
    raise it."""


class JobInterrupted(BaseException):
    """Raised inside a running job to stop it, so its finally blocks and context
    managers run; the hard kill follows after kill_grace if the job does not end.  A
    BaseException, like KeyboardInterrupt: a job's `except Exception` does not swallow
    it.  (The one kind of error jobengine raises that is not a JobEngineError.)"""


class JobCanceled(JobInterrupted):
    """The running job was canceled (cancel_instances) or the manager is stopping."""


class JobTimeout(JobInterrupted):
    """The attempt ran past its job's timeout: raised inside the job, and what the
    instance's Future raises.  A BaseException, not an Exception (see
    JobInterrupted)."""


class MemoryLimitExceeded(JobEngineError, MemoryError):
    """The worker running the attempt went over max_memory_per_worker and was killed."""


class StoreError(JobEngineError):
    """A store could not be opened or failed an operation."""
