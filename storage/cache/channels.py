"""The names of every pub/sub channel, built here only (``Cache.publish``/``subscribe``).

A tenant's events, item writes and account changes go on tenant-keyed channels (one cluster
slot per tenant, like its keys); promoted model versions on ``models:{tenant}``, which serving
replicas and live subscriptions watch.
"""

from __future__ import annotations

from storage.cache.base import tenant_key


def models_channel(tenant_id: object) -> str:
    """Where training, promotion and rollback announce a tenant's new model versions."""
    return f"models:{tenant_id}"


def events_channel(tenant_id: object) -> str:
    """Interactions and ratings as they are recorded."""
    return tenant_key(tenant_id, "events")


def items_channel(tenant_id: object) -> str:
    """Item writes: ``{"kind": "item", "change": "created" | "updated" | "deleted"}``."""
    return tenant_key(tenant_id, "items")


def auth_channel(tenant_id: object) -> str:
    """Deactivations and ended sessions of the tenant, for live subscriptions to react to."""
    return tenant_key(tenant_id, "auth-events")
