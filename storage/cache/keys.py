"""Cache keys several packages agree on, and the tenant's model epoch.

The model epoch is a per-tenant counter (``rec:{tenant}:model_epoch``) bumped whenever the
tenant's current model changes: after training promotes new versions, and on a manual promote
or rollback. Cached recommendation results carry the epoch in their key, so a bump makes every
older result unreachable at once, on every replica, without scanning keys.
"""

from __future__ import annotations

from storage.cache.base import Cache, tenant_key


def model_epoch_key(tenant_id: object) -> str:
    return tenant_key(tenant_id, "model_epoch")


async def model_epoch(cache: Cache, tenant_id: object) -> int:
    """The tenant's current epoch; 0 until the first bump."""
    value = await cache.get(model_epoch_key(tenant_id))
    return int(value) if value is not None else 0


async def bump_model_epoch(cache: Cache, tenant_id: object) -> int:
    """Advance the tenant's epoch (atomic on every backend) and return the new value.

    Call after promoting or rolling back a model version: cached results of the old epoch are
    never read again and expire by their TTL.
    """
    return await cache.incr(model_epoch_key(tenant_id))


def fresh_items_key(tenant_id: object) -> str:
    """Set while the tenant has items newer than its last training (they have vector-store
    points marked ``fresh``); training deletes it. Lets requests skip the exploration search."""
    return tenant_key(tenant_id, "fresh_items")
