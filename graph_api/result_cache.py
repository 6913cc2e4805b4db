"""Recommendation results in the shared cache: epoch-versioned keys, single-flight, fail-open.

Key layout (all hash-tagged by tenant, so one tenant's keys share a Redis Cluster slot)::

    rec:{tenant}:recs:{user}:e{model epoch}:{options fingerprint}

A model promotion bumps the epoch (``storage.cache.keys``) and old keys are never read again; a
user's new interaction drops the ``rec:{tenant}:recs:{user}:`` prefix; an item change drops the
tenant's ``rec:{tenant}:recs:`` prefix.

Single-flight: identical misses in this process wait on one future; across replicas the first
miss takes a short lock (an ``incr`` that only the first caller sees return 1, with a TTL, i.e.
``SET NX PX``) and the others poll the cache for its result, computing themselves only if it
does not show up in time. When the cache is unreachable every call computes uncached and the
request still succeeds; the health endpoint reports the outage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from storage.cache.base import Cache
from storage.cache.keys import model_epoch
from storage.errors import Unavailable

logger = logging.getLogger(__name__)

LOCK_SECONDS = 5.0
WAIT_SECONDS = 2.0
POLL_SECONDS = 0.02


class ResultCache:
    def __init__(
        self,
        cache: Cache,
        *,
        ttl: float,
        lock_seconds: float = LOCK_SECONDS,
        wait_seconds: float = WAIT_SECONDS,
    ) -> None:
        self.cache = cache
        self.ttl = ttl
        self.lock_seconds = lock_seconds
        self.wait_seconds = wait_seconds
        self._inflight: dict[str, asyncio.Future[Any]] = {}

    async def _safe(self, operation: str, call: Awaitable[Any], default: Any = None) -> Any:
        try:
            return await call
        except Unavailable as error:
            logger.warning("cache %s skipped, serving uncached: %s", operation, error)
            return default

    async def epoch(self, tenant_id: object) -> int | None:
        """The tenant's model epoch, or None when the cache cannot be reached."""
        return await self._safe("epoch", model_epoch(self.cache, tenant_id))

    async def drop_prefix(self, prefix: str) -> None:
        await self._safe("invalidate", self.cache.delete_prefix(prefix))

    async def get_or_compute(
        self, key: str, compute: Callable[[], Awaitable[Any]]
    ) -> tuple[Any, bool]:
        """``(value, cached)``: ``cached`` is False only for the call that ran ``compute``."""
        hit = await self._safe("get", self.cache.get(key))
        if hit is not None:
            return hit, True
        running = self._inflight.get(key)
        if running is not None:
            return await asyncio.shield(running), True
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            value, cached = await self._lead(key, compute)
        except Exception as error:
            future.set_exception(error)
            future.exception()  # retrieved here, so a lone leader leaves no warning behind
            raise
        except BaseException:
            future.cancel()
            raise
        finally:
            self._inflight.pop(key, None)
        future.set_result(value)
        return value, cached

    async def _lead(self, key: str, compute: Callable[[], Awaitable[Any]]) -> tuple[Any, bool]:
        lock = key + ":lock"
        owner = await self._safe("lock", self.cache.incr(lock, ttl=self.lock_seconds), default=1)
        if owner != 1:
            # Another replica is computing this very result: wait for it to land.
            found = await self._poll(key)
            if found is not None:
                return found, True
        try:
            value = await compute()
            await self._safe("set", self.cache.set(key, value, ttl=self.ttl))
        finally:
            if owner == 1:
                await self._safe("unlock", self.cache.delete(lock))
        return value, False

    async def _poll(self, key: str) -> Any | None:
        deadline = time.monotonic() + self.wait_seconds
        while time.monotonic() < deadline:
            await asyncio.sleep(POLL_SECONDS)
            found = await self._safe("get", self.cache.get(key))
            if found is not None:
                return found
        return None
