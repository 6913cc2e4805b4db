"""Recommendation results in the shared cache: epoch-stamped values, single-flight, fail-open.

Key layout (all hash-tagged by tenant, so one tenant's keys share a Redis Cluster slot)::

    rec:{tenant}:recs:{user}:{options fingerprint}  ->  {"epoch": n, "value": ...}
    rec:{tenant}:recs:similar:{item}:{k}, rec:{tenant}:recs:top:{category hash}:{limit}

A value is stamped with the tenant's model epoch it was computed under. The epoch and the value
are read in one round trip (one ``get_many``: same slot), and a value of an older epoch is a
miss, so a model promotion (which bumps the epoch, ``storage.cache.keys``) retires every result
at once. A user's new interaction drops the ``rec:{tenant}:recs:{user}:`` prefix; an item change
drops the tenant's ``rec:{tenant}:recs:`` prefix.

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
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from storage.cache.base import Cache
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

    async def _lookup(
        self, key: str, epoch_key: str | None, known: Mapping[str, Any] | None = None
    ) -> tuple[int | None, Any]:
        """``(epoch, value)`` in one round trip: the value only if it was computed under the
        current epoch; ``(None, None)`` when the cache cannot be reached. ``known``: values
        already read in this request's round trip (see ``lookup_keys``); no read then."""
        keys = self.lookup_keys(key, epoch_key)
        if known is not None and all(k in known for k in keys):
            found: dict[str, Any] | None = {k: known[k] for k in keys if known[k] is not None}
        else:
            found = await self._safe("get", self.cache.get_many(keys))
        if found is None:
            return None, None
        epoch = int(found.get(epoch_key, 0)) if epoch_key is not None else 0
        stored = found.get(key)
        if isinstance(stored, dict) and stored.get("epoch") == epoch:
            return epoch, stored.get("value")
        return epoch, None

    @staticmethod
    def lookup_keys(key: str, epoch_key: str | None) -> list[str]:
        """The keys a lookup reads: a caller may read them earlier, in its own round trip."""
        return [key] if epoch_key is None else [epoch_key, key]

    async def drop_prefix(self, prefix: str) -> None:
        await self._safe("invalidate", self.cache.delete_prefix(prefix))

    async def get_or_compute(
        self,
        key: str,
        compute: Callable[[], Awaitable[Any]],
        *,
        epoch_key: str | None = None,
        known: Mapping[str, Any] | None = None,
        ttl: float | None = None,
    ) -> tuple[Any, bool]:
        """``(value, cached)``: ``cached`` is False only for the call that ran ``compute``.

        ``epoch_key`` names the counter whose current value a cached value must carry (the
        tenant's model epoch); without it values are stamped 0. An unreachable cache computes.
        ``known`` holds the lookup keys' values when the caller read them already. ``ttl``
        overrides the cache's own for this value.
        """
        epoch, hit = await self._lookup(key, epoch_key, known)
        if epoch is None:  # cache unreachable: answer uncached rather than fail
            return await compute(), False
        if hit is not None:
            return hit, True
        running = self._inflight.get(key)
        if running is not None:
            return await asyncio.shield(running), True
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            value, cached = await self._lead(key, compute, epoch, epoch_key, ttl or self.ttl)
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

    async def _lead(
        self,
        key: str,
        compute: Callable[[], Awaitable[Any]],
        epoch: int,
        epoch_key: str | None,
        ttl: float,
    ) -> tuple[Any, bool]:
        lock = key + ":lock"
        owner = await self._safe("lock", self.cache.incr(lock, ttl=self.lock_seconds), default=1)
        if owner != 1:
            # Another replica is computing this very result: wait for it to land.
            found = await self._poll(key, epoch_key)
            if found is not None:
                return found, True
        try:
            value = await compute()
            stamped = {"epoch": epoch, "value": value}
            await self._safe("set", self.cache.set(key, stamped, ttl=ttl))
        finally:
            if owner == 1:
                await self._safe("unlock", self.cache.delete(lock))
        return value, False

    async def _poll(self, key: str, epoch_key: str | None) -> Any | None:
        deadline = time.monotonic() + self.wait_seconds
        while time.monotonic() < deadline:
            await asyncio.sleep(POLL_SECONDS)
            _, found = await self._lookup(key, epoch_key)
            if found is not None:
                return found
        return None
