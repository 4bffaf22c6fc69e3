"""The one function that names Redis keys.

Every key of a tenant carries the tenant id as a ``{hash tag}``, so on Redis Cluster all of one
tenant's keys live in one slot and a Lua script over them is legal. The few keys that belong to
no tenant (the cross-tenant reconcile set, the catalog cache, leases, the global audit trail,
the data id) are named here too, without a tag; no script ever touches them together with a
tenant's keys.
"""

from __future__ import annotations

__all__ = ("store_key",)


def store_key(prefix: str, tenant: str | None, *parts: str) -> str:
    """``<prefix>:{<tenant>}:<part>:…`` (``gmigw:{studio-web}:job:<id>``); no tag for ``None``.

    Raises:
        ValueError: the tenant id holds a brace, which would move the hash tag (and so could put
            two tenants' keys in one slot or one tenant's keys in two).
    """
    if tenant is None:
        return ":".join((prefix, *parts))
    if "{" in tenant or "}" in tenant or not tenant:
        raise ValueError(f"tenant id {tenant!r} cannot be a Redis hash tag")
    return ":".join((prefix, f"{{{tenant}}}", *parts))
