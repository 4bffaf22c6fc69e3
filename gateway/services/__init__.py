"""Policy: tenants, jobs, the model catalog, payload validation, quotas."""

__all__ = ()
