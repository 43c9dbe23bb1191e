"""Jobs and the stdlib `logging` module, both ways.

- A job's log lines (`ji.info(...)` and the lines jobengine writes to an instance's
  history) also go to the logger `jobengine.job`, with the instance's `uuid`, `kind`
  and `attempt` as record attributes (use them in a format: `%(kind)s %(uuid)s`).
- What a job logs through `logging` in a worker reaches the manager's handlers: each
  worker's root logger forwards its records over the worker's event ring, and the
  manager hands them to the logger of the same name.  Workers forward at the level the
  manager's root logger had when the pool started (so DEBUG noise is dropped in the
  worker unless the manager asked for it), and a `logging.basicConfig()` run by a job
  module in a worker is a no-op (the forwarding handler is already there): records are
  not printed twice.

Owns: the record format on the ring (a pickled LogRecord dict) and both ends.  Never
does: configure the manager's logging (that is the application's).
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable
from typing import Any

JOB_LOGGER = logging.getLogger("jobengine.job")
# A program that configures no logging does not get every job's warnings on stderr
# (logging's last-resort handler): they are in the history; handlers configured on the
# root or "jobengine" loggers still receive them.
JOB_LOGGER.addHandler(logging.NullHandler())


def to_job_logger(uuid: str, kind: str, level: int, message: str, attempt: int) -> None:
    """One line of an instance's log history, to `jobengine.job` (if enabled)."""
    if JOB_LOGGER.isEnabledFor(level):
        JOB_LOGGER.log(level, message, extra={"uuid": uuid, "kind": kind, "attempt": attempt})


class ForwardToManager(logging.Handler):
    """The worker's root handler: each record travels to the manager as plain data."""

    def __init__(self, send: Callable[[bytes], None], level: int):
        super().__init__(level)
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._send(encode_record(record, self))
        except Exception:
            self.handleError(record)


def encode_record(record: logging.LogRecord, handler: logging.Handler) -> bytes:
    """The record with its message formatted and its traceback as text (arguments and
    exc_info may not pickle); extra attributes that do not pickle become their repr."""
    d: dict[str, Any] = dict(record.__dict__)
    d["msg"] = record.getMessage()
    d["args"] = None
    if record.exc_info and not record.exc_text:
        formatter = handler.formatter or logging.Formatter()
        d["exc_text"] = formatter.formatException(record.exc_info)
    d["exc_info"] = None
    d.pop("message", None)
    try:
        return pickle.dumps(d, protocol=5)
    except Exception:
        return pickle.dumps({k: _plain(v) for k, v in d.items()}, protocol=5)


def _plain(v: Any) -> Any:
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    try:
        pickle.dumps(v, protocol=5)
        return v
    except Exception:
        return repr(v)


def install_in_worker(send: Callable[[bytes], None], level: int) -> None:
    """Make the worker's root logger forward records at `level` and above."""
    root = logging.getLogger()
    for h in list(root.handlers):  # (inherited from nothing: the worker is fresh)
        root.removeHandler(h)
    root.addHandler(ForwardToManager(send, level))
    root.setLevel(level)


def relay(blob: bytes) -> None:
    """Manager side: a worker's record, to the logger it was logged to."""
    record = logging.makeLogRecord(pickle.loads(blob))
    logger = logging.getLogger(record.name)
    if logger.isEnabledFor(record.levelno):
        logger.handle(record)


__all__ = ["JOB_LOGGER", "ForwardToManager", "install_in_worker", "relay", "to_job_logger"]
