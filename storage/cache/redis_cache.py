"""The cache on one Redis server (``redis://`` or ``rediss://``)."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from storage.cache.base import PipelineOp, Subscription
from storage.cache.redis_common import (
    CONNECTION_HEADROOM,
    RedisFamilyCache,
    RedisSubscription,
    scan_pattern,
    translate_errors,
)

_DELETE_BATCH = 500


def fail_fast_retry(retries: int) -> Retry:
    # redis-py's default retries with growing backoff would hold a request for seconds against
    # a dead server; callers would rather fall back (e.g. skip the cache) immediately.
    return Retry(ExponentialBackoff(cap=0.2, base=0.02), retries)


class RedisCache(RedisFamilyCache):
    """redis.asyncio client; pipelines run as MULTI/EXEC transactions."""

    def __init__(
        self,
        url: str,
        *,
        default_ttl: float | None = None,
        compress_min_bytes: int = 4096,
        socket_timeout: float = 2.0,
        connect_timeout: float = 1.0,
        retries: int = 1,
        max_concurrency: int = 64,
        **client_options: Any,
    ) -> None:
        # Query-string options in the URL (e.g. ?socket_timeout=5) override these keywords.
        client = Redis.from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
            retry=fail_fast_retry(retries),
            max_connections=max_concurrency + CONNECTION_HEADROOM,
            **client_options,
        )
        super().__init__(
            client,
            max_concurrency=max_concurrency,
            default_ttl=default_ttl,
            compress_min_bytes=compress_min_bytes,
        )

    async def _get_many_raw(self, keys: list[str]) -> list[bytes | None]:
        async with self._command("get"):
            return list(await self._client.mget(keys))

    async def _execute_pipeline(self, ops: list[PipelineOp]) -> list[Any]:
        return await self._run_ops(ops, transaction=True)

    async def delete_prefix(self, prefix: str) -> int:
        deleted = 0
        batch: list[bytes] = []
        with translate_errors("delete_prefix"):
            async for key in self._client.scan_iter(match=scan_pattern(prefix), count=1000):
                batch.append(key)
                if len(batch) >= _DELETE_BATCH:
                    deleted += await self._client.unlink(*batch)
                    batch.clear()
            if batch:
                deleted += await self._client.unlink(*batch)
        return deleted

    async def _subscribe(self, channels: tuple[str, ...]) -> Subscription:
        pubsub = self._client.pubsub()
        with translate_errors("subscribe"):
            await pubsub.subscribe(*channels)
        return RedisSubscription(pubsub, channels)
