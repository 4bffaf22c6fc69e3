"""Shared state behind one contract; the backends (``memory``, ``redis``) are picked by ``app``.

Only the contract is exported here so that importing the package never drags a backend (or
redis-py) into the services that depend on it.
"""

from gateway.store.base import JobPage, Store, StoredJob, StoreError

__all__ = ("JobPage", "Store", "StoreError", "StoredJob")
