"""The one function that names Redis keys.

Every key of a tenant carries the tenant id as a ``{hash tag}``, so on Redis Cluster all of one
tenant's keys live in one slot and a Lua script over them is legal.
"""

from __future__ import annotations

__all__ = ("tenant_key",)


def tenant_key(prefix: str, tenant: str, *parts: str) -> str:
    """``<prefix>:{<tenant>}:<part>:<part>…``, e.g. ``gmigw:{studio-web}:job:<id>``."""
    return f"{prefix}:{{{tenant}}}:" + ":".join(parts)
