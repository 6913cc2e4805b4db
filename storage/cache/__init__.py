"""Cache, counters, rate-limit windows and pub/sub: in-process, Redis or Redis Cluster.

cache = create_cache(settings)
await cache.set(tenant_key(tenant, "user", user_id), payload, ttl=60)
verdict = await cache.sliding_window(tenant_key(tenant, "rl", user_id), 100, 60.0)
"""

from storage.cache.base import (
    NEVER_EXPIRE,
    Cache,
    CachePipeline,
    Subscription,
    WindowResult,
    tenant_key,
)
from storage.cache.cluster_cache import RedisClusterCache
from storage.cache.factory import create_cache
from storage.cache.memory_cache import InProcessCache
from storage.cache.redis_cache import RedisCache

__all__ = [
    "NEVER_EXPIRE",
    "Cache",
    "CachePipeline",
    "InProcessCache",
    "RedisCache",
    "RedisClusterCache",
    "Subscription",
    "WindowResult",
    "create_cache",
    "tenant_key",
]
