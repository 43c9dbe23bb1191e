"""Stores: where instances, their state history and their logs are kept."""

from __future__ import annotations

from urllib.parse import urlparse

from ..errors import StoreError
from .base import Store
from .memory import MemoryStore
from .sqlite import SQLiteStore


def open_store(url: str, namespace: str = "jobengine") -> Store:
    """Build a store from a URL: memory://, sqlite:///relative/or/absolute/path or
    sqlite://:memory:.  (redis:// and postgresql:// arrive with the external-store issue
    and raise StoreError here.)"""
    parsed = urlparse(url)
    if parsed.scheme == "memory":
        return MemoryStore(namespace=namespace)
    if parsed.scheme == "sqlite":
        path = parsed.netloc + parsed.path if parsed.netloc == ":memory:" else parsed.path[1:]
        if not path:
            raise StoreError(f"sqlite URL {url!r} names no file (sqlite:///path/to/file)")
        return SQLiteStore(path, namespace=namespace)
    raise StoreError(f"unsupported store URL {url!r} (supported: memory://, sqlite:///path)")


__all__ = ["MemoryStore", "SQLiteStore", "Store", "open_store"]
