"""Stores: where instances, their state history and their logs are kept.

RedisStore and PostgresStore load on first use: their drivers (redis-py, psycopg) take
~0.2 s to import, which every process importing jobengine (the supervisor included)
would otherwise pay whether it uses them or not.

Owns: open_store (a store from a URL) and the lazy loading of the optional drivers.
Never does: import redis-py or psycopg before they are used."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from ..errors import StoreError
from .base import Store
from .memory import MemoryStore
from .sqlite import SQLiteStore

if TYPE_CHECKING:
    from .postgres import PostgresStore
    from .redis import RedisStore


def __getattr__(name: str) -> Any:
    if name == "RedisStore":
        from .redis import RedisStore

        return RedisStore
    if name == "PostgresStore":
        from .postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_store(url: str, namespace: str = "jobengine") -> Store:
    """Build a store from a URL: memory://, sqlite:///path (or sqlite://:memory:),
    redis://host:port/db, postgresql://user@host:port/db."""
    parsed = urlparse(url)
    if parsed.scheme in ("redis", "rediss", "unix"):
        from .redis import RedisStore

        return RedisStore(url, namespace=namespace)
    if parsed.scheme in ("postgresql", "postgres"):
        from .postgres import PostgresStore

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
