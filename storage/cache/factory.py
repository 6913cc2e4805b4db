"""Pick the cache backend from settings: no Redis URL means the in-process cache."""

from __future__ import annotations

from urllib.parse import urlsplit

from storage.cache.base import Cache
from storage.cache.cluster_cache import CLUSTER_SCHEMES, RedisClusterCache
from storage.cache.memory_cache import InProcessCache
from storage.cache.redis_cache import RedisCache
from storage.errors import InvalidData
from storage.settings import Settings, get_settings

_REDIS_SCHEMES = ("redis", "rediss", "unix")


def create_cache(
    settings_or_url: Settings | str | None = None,
    *,
    socket_timeout: float = 2.0,
    connect_timeout: float = 1.0,
    retries: int = 1,
    max_concurrency: int = 64,
) -> Cache:
    """The cache for ``Settings.redis_url`` (or a URL given directly; ``None`` = process settings).

    ``redis://`` / ``rediss://`` -> ``RedisCache``; ``redis+cluster://h:p,h:p`` ->
    ``RedisClusterCache``; no URL -> ``InProcessCache``. Clients connect lazily, so creating a
    cache never blocks; the first command raises ``Unavailable`` if the server is down.
    """
    if isinstance(settings_or_url, str):
        settings, url = get_settings(), settings_or_url
    else:
        settings = settings_or_url or get_settings()
        url = settings.redis_url
    common = {
        "default_ttl": float(settings.cache_default_ttl_seconds),
        "compress_min_bytes": settings.cache_compress_min_bytes,
    }
    if not url:
        return InProcessCache(**common)
    client_options = {
        "socket_timeout": socket_timeout,
        "connect_timeout": connect_timeout,
        "retries": retries,
        "max_concurrency": max_concurrency,
    }
    scheme = urlsplit(url).scheme
    if scheme in CLUSTER_SCHEMES:
        return RedisClusterCache(url, **common, **client_options)
    if scheme in _REDIS_SCHEMES:
        return RedisCache(url, **common, **client_options)
    raise InvalidData(f"unsupported cache URL scheme {scheme!r}")
