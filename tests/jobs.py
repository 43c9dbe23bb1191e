"""Executors for the engine tests.  Module-level, so workers import them by name."""

from __future__ import annotations

import os
import time

from jobengine import Instance


def add(a, b):
    return a + b


def noop():
    return None


def pid():
    return os.getpid()


def sleep_then(seconds, value=None):
    time.sleep(seconds)
    return value


def fail(message="boom"):
    raise ValueError(message)


class CustomError(Exception):
    def __init__(self, code, detail):  # an __init__ pickle cannot replay
        super().__init__(f"code {code}: {detail}")
        self.code = code


def fail_custom():
    raise CustomError(7, "custom")


def log_lines(n, ji):
    for i in range(n):
        ji.info(f"line {i}")
    ji.warn("careful")
    return n


def annotated(x: int, inst: Instance) -> str:
    inst.debug(f"x={x}")
    return inst.uuid


def append_line(path, text):
    # O_APPEND writes of one short line are atomic: a record of every run.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{text}\n".encode())
    finally:
        os.close(fd)
    return text


def append_after(path, text, seconds):
    time.sleep(seconds)
    return append_line(path, text)


def cpu(n):
    s = 0
    for i in range(n):
        s += i * i
    return s


def big(n):
    return b"x" * n


def echo(x):
    return x


def unpicklable_result():
    import threading

    return threading.Lock()


class Counter:
    def __init__(self, base):
        self.base = base

    def plus(self, x):
        return self.base + x
