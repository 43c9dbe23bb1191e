"""Stores: where instances, their state history and their logs are kept."""

from __future__ import annotations

from urllib.parse import urlparse

from ..errors import StoreError
from .base import Store
from .memory import MemoryStore


def open_store(url: str, namespace: str = "jobengine") -> Store:
    """Build a store from a URL.  Supported now: memory://  (sqlite, redis and
    postgresql URLs arrive with the external-store issue and raise StoreError here)."""
    scheme = urlparse(url).scheme
    if scheme == "memory":
        return MemoryStore(namespace=namespace)
    raise StoreError(f"unsupported store URL {url!r} (supported: memory://)")


__all__ = ["MemoryStore", "Store", "open_store"]
