"""jobengine: register jobs, schedule them, run them on a pool of worker processes.

The public surface, and nothing else (see README.md for a tour).

Owns: the public surface, nothing else.  Never does: start anything on import."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .version import __version__


def _load_core():
    """Import the compiled core, or explain how to build it (there is no fallback)."""
    try:
        return importlib.import_module("jobengine._core")
    except ImportError as exc:
        raise ImportError(
            "jobengine's compiled core (jobengine._core) is not built; install the "
            "project with `pip install .` (needs a C compiler) or build it in place "
            "with `python setup.py build_ext --inplace`"
        ) from exc


_load_core()

from .errors import (  # noqa: E402
    ArgumentBindingError,
    DuplicateJobError,
    EngineFailedError,
    IllegalTransitionError,
    InitializerError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidJobError,
    JobCanceled,
    JobEngineError,
    JobHandlingError,
    JobInterrupted,
    JobTimeout,
    ManagerStateError,
    MemoryLimitExceeded,
    RemoteError,
    RemoteTraceback,
    ResultDecodeError,
    SerializationError,
    StoreError,
    TaskLoadError,
    UnknownJobError,
    WorkerCrashed,
)
from .instance import Instance  # noqa: E402
from .job import RETRY_FOREVER, Job  # noqa: E402
from .manager import Manager  # noqa: E402
from .payloads import PayloadError  # noqa: E402
from .pool.pool import WorkerEvent, WorkerInfo  # noqa: E402
from .pool.worker import WorkerInstance  # noqa: E402
from .query import Query  # noqa: E402
from .records import (  # noqa: E402
    InstanceRecord,
    LogLevel,
    LogRecord,
    RecurrenceRecord,
    StateRecord,
)
from .retry import exponential_backoff  # noqa: E402
from .state import State  # noqa: E402
from .stores import MemoryStore, SQLiteStore, Store, open_store  # noqa: E402

if TYPE_CHECKING:
    from .stores.postgres import PostgresStore
    from .stores.redis import RedisStore


def __getattr__(name: str) -> Any:
    # RedisStore and PostgresStore load on first use (see jobengine.stores).
    if name in ("RedisStore", "PostgresStore"):
        from . import stores

        return getattr(stores, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"RedisStore", "PostgresStore"})


__all__ = [
    "RETRY_FOREVER",
    "ArgumentBindingError",
    "DuplicateJobError",
    "EngineFailedError",
    "IllegalTransitionError",
    "InitializerError",
    "Instance",
    "InstanceRecord",
    "InvalidArgumentError",
    "InvalidArgumentTypeError",
    "InvalidJobError",
    "Job",
    "JobCanceled",
    "JobEngineError",
    "JobHandlingError",
    "JobInterrupted",
    "JobTimeout",
    "LogLevel",
    "LogRecord",
    "Manager",
    "ManagerStateError",
    "MemoryLimitExceeded",
    "MemoryStore",
    "PayloadError",
    "PostgresStore",
    "Query",
    "RecurrenceRecord",
    "RedisStore",
    "RemoteError",
    "RemoteTraceback",
    "ResultDecodeError",
    "SQLiteStore",
    "SerializationError",
    "State",
    "StateRecord",
    "Store",
    "StoreError",
    "TaskLoadError",
    "UnknownJobError",
    "WorkerCrashed",
    "WorkerEvent",
    "WorkerInfo",
    "WorkerInstance",
    "__version__",
    "exponential_backoff",
    "open_store",
]
