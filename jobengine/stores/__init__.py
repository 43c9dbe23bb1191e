"""Stores: where instances, their state history and their logs are kept."""

from __future__ import annotations

from urllib.parse import urlparse

from ..errors import StoreError
from .base import Store
from .memory import MemoryStore
from .postgres import PostgresStore
from .redis import RedisStore
from .sqlite import SQLiteStore


def open_store(url: str, namespace: str = "jobengine") -> Store:
    """Build a store from a URL: memory://, sqlite:///path (or sqlite://:memory:),
    redis://host:port/db, postgresql://user@host:port/db."""
    parsed = urlparse(url)
    if parsed.scheme in ("redis", "rediss", "unix"):
        return RedisStore(url, namespace=namespace)
    if parsed.scheme in ("postgresql", "postgres"):
        return PostgresStore(url, namespace=namespace)
    if parsed.scheme == "memory":
        return MemoryStore(namespace=namespace)
    if parsed.scheme == "sqlite":
        path = parsed.netloc + parsed.path if parsed.netloc == ":memory:" else parsed.path[1:]
        if not path:
            raise StoreError(f"sqlite URL {url!r} names no file (sqlite:///path/to/file)")
        return SQLiteStore(path, namespace=namespace)
    raise StoreError(
        f"unsupported store URL {url!r} (supported: memory://, sqlite:///path, redis://, "
        "postgresql://)"
    )


__all__ = ["MemoryStore", "PostgresStore", "RedisStore", "SQLiteStore", "Store", "open_store"]
