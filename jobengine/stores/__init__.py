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
from ..payloads import secret_from
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


_DEFAULT = object()


def open_store(
    url: str,
    namespace: str = "jobengine",
    *,
    secret: str | bytes | None = None,
    max_instances: Any = _DEFAULT,
    max_age: float | None = None,
) -> Store:
    """Build a store from a URL: memory://, sqlite:///path (or sqlite://:memory:),
    redis://host:port/db, postgresql://user@host:port/db.  secret: the key that signs
    pickled payloads (default JOBENGINE_SECRET); max_instances / max_age: retention
    (default: 10,000 finished instances for memory://, unbounded for the others)."""
    parsed = urlparse(url)
    retention: dict[str, Any] = {"max_age": max_age}
    if max_instances is not _DEFAULT:
        retention["max_instances"] = max_instances
    if parsed.scheme in ("redis", "rediss", "unix"):
        from .redis import RedisStore

        store: Store = RedisStore(url, namespace=namespace, **retention)
    elif parsed.scheme in ("postgresql", "postgres"):
        from .postgres import PostgresStore

        store = PostgresStore(url, namespace=namespace, **retention)
    elif parsed.scheme == "memory":
        store = MemoryStore(namespace=namespace, **retention)
    elif parsed.scheme == "sqlite":
        path = parsed.netloc + parsed.path if parsed.netloc == ":memory:" else parsed.path[1:]
        if not path:
            raise StoreError(f"sqlite URL {url!r} names no file (sqlite:///path/to/file)")
        store = SQLiteStore(path, namespace=namespace, **retention)
    else:
        raise StoreError(
            f"unsupported store URL {url!r} (supported: memory://, sqlite:///path, redis://, "
            "postgresql://)"
        )
    store.use_secret(secret_from(secret))
    return store


__all__ = ["MemoryStore", "PostgresStore", "RedisStore", "SQLiteStore", "Store", "open_store"]
