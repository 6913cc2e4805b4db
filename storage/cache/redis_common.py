"""What the Redis and Redis Cluster caches share: Lua scripts, error translation, pub/sub reading.

Both scripts touch exactly one key, so they are slot-safe on a cluster and atomic everywhere:
concurrent replicas (or processes) can never overspend a rate limit between a read and a write.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import Any

from redis.asyncio.client import PubSub
from redis.exceptions import (
    ClusterDownError,
    OutOfMemoryError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)

from storage.cache.base import Cache, PipelineOp, Subscription, WindowResult
from storage.errors import InvalidData, Unavailable

# Scores are milliseconds from the server clock (TIME), so every client shares one clock.
# Numbers are formatted explicitly: Lua's default conversion keeps only 14 digits, which would
# round epoch milliseconds to 10 ms and let bursts slip through the window edge.
SLIDING_WINDOW_LUA = """
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window_ms = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local token = ARGV[4]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + tonumber(clock[2]) / 1000
redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%.3f', now - window_ms))
local count = redis.call('ZCARD', key)
if count + cost <= limit then
  local args = {}
  for i = 1, cost do
    args[#args + 1] = string.format('%.3f', now)
    args[#args + 1] = token .. ':' .. i
  end
  redis.call('ZADD', key, unpack(args))
  redis.call('PEXPIRE', key, math.ceil(window_ms))
  return {1, limit - count - cost, '0', count + cost}
end
local retry_ms = window_ms
local must_expire = count + cost - limit
if must_expire <= count then
  local oldest = redis.call('ZRANGE', key, must_expire - 1, must_expire - 1, 'WITHSCORES')
  retry_ms = tonumber(oldest[2]) + window_ms - now
end
return {0, math.max(limit - count, 0), tostring(math.max(retry_ms, 0)), count}
"""

# The TTL is only applied to a counter that has none, so a fixed window is not pushed forward by
# every hit.
INCR_LUA = """
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
local ttl_ms = tonumber(ARGV[2])
if ttl_ms > 0 and redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('PEXPIRE', KEYS[1], ttl_ms)
end
return value
"""

_UNAVAILABLE = (ClusterDownError, TryAgainError, OutOfMemoryError)

# redis-py pools raise MaxConnectionsError instead of waiting once full, which would turn a burst
# into errors. Commands therefore queue on a semaphore below the pool size; the pool keeps this
# much headroom for long-lived pub/sub connections and prefix scans, which take no slot.
CONNECTION_HEADROOM = 100


@contextmanager
def translate_errors(operation: str) -> Iterator[None]:
    """Turn driver exceptions into the storage exception tree."""
    try:
        yield
    except _UNAVAILABLE as exc:
        raise Unavailable(f"cache {operation} failed: {exc}") from exc
    except ResponseError as exc:
        raise InvalidData(f"cache {operation} rejected: {exc}") from exc
    except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
        raise Unavailable(f"cache {operation} failed: {type(exc).__name__}: {exc}") from exc


def milliseconds(ttl: float | None) -> int:
    return 0 if ttl is None else max(1, math.ceil(ttl * 1000))


def queue_op(pipe: Any, op: PipelineOp) -> None:
    """Append one pipeline step to a redis-py pipeline (plain or cluster)."""
    if op.kind == "set":
        pipe.set(op.key, op.value, px=milliseconds(op.ttl) or None)
    elif op.kind == "delete":
        pipe.delete(op.key)
    else:
        pipe.eval(INCR_LUA, 1, op.key, op.amount, milliseconds(op.ttl))


def op_result(op: PipelineOp, raw: Any) -> Any:
    if op.kind == "set":
        return bool(raw)
    return bool(raw) if op.kind == "delete" else int(raw)


def scan_pattern(prefix: str) -> str:
    """A SCAN MATCH pattern for keys starting with ``prefix``, its glob characters escaped."""
    escaped = "".join("\\" + char if char in "*?[]\\" else char for char in prefix)
    return escaped + "*"


class RedisFamilyCache(Cache):
    """Operations identical on a single Redis and on a Redis Cluster client."""

    def __init__(
        self,
        client: Any,
        *,
        max_concurrency: int,
        default_ttl: float | None = None,
        compress_min_bytes: int = 4096,
    ) -> None:
        super().__init__(default_ttl=default_ttl, compress_min_bytes=compress_min_bytes)
        self._client = client
        self._slots = asyncio.Semaphore(max_concurrency)
        self._window_script = client.register_script(SLIDING_WINDOW_LUA)
        self._incr_script = client.register_script(INCR_LUA)

    async def _set_many_raw(self, items: list[tuple[str, bytes]], ttl: float | None) -> None:
        await self._execute_batch([PipelineOp("set", k, value=v, ttl=ttl) for k, v in items])

    async def _delete(self, keys: list[str]) -> int:
        return sum(await self._execute_batch([PipelineOp("delete", key) for key in keys]))

    async def _execute_batch(self, ops: list[PipelineOp]) -> list[Any]:
        """Run ``ops`` in one round trip; unlike ``pipeline()`` they need not be atomic."""
        return await self._execute_pipeline(ops)

    async def _run_ops(self, ops: list[PipelineOp], *, transaction: bool) -> list[Any]:
        async with (
            self._command("pipeline"),
            self._client.pipeline(transaction=transaction) as pipe,
        ):
            for op in ops:
                queue_op(pipe, op)
            raw = await pipe.execute()
        return [op_result(op, value) for op, value in zip(ops, raw, strict=True)]

    async def _ready(self) -> None:
        """Hook run before commands; the cluster uses it to discover its topology once."""

    @asynccontextmanager
    async def _command(self, operation: str) -> AsyncIterator[None]:
        """Wait for a connection slot, make sure the client is ready, translate errors."""
        async with self._slots:
            with translate_errors(operation):
                await self._ready()
                yield

    async def _incr(self, key: str, amount: int, ttl: float | None) -> int:
        async with self._command("incr"):
            return int(await self._incr_script(keys=[key], args=[amount, milliseconds(ttl)]))

    async def _sliding_window(
        self, key: str, limit: int, window_seconds: float, cost: int
    ) -> WindowResult:
        args = [limit, window_seconds * 1000, cost, uuid.uuid4().hex]
        async with self._command("sliding_window"):
            allowed, remaining, retry_ms, count = await self._window_script(keys=[key], args=args)
        return WindowResult(bool(allowed), int(remaining), float(retry_ms) / 1000, int(count))

    async def _publish_raw(self, channel: str, payload: bytes) -> int:
        async with self._command("publish"):
            return int(await self._client.publish(channel, payload))

    async def ping(self) -> bool:
        async with self._command("ping"):
            return bool(await self._client.ping())

    async def close(self) -> None:
        with translate_errors("close"):
            await self._client.aclose()


class RedisSubscription(Subscription):
    """Reads a redis-py ``PubSub`` (plain or cluster) that is already subscribed."""

    def __init__(self, pubsub: PubSub, channels: tuple[str, ...]) -> None:
        super().__init__(channels)
        self._pubsub = pubsub

    async def _next_raw(self, wait_seconds: float | None) -> tuple[str, bytes] | None:
        loop = asyncio.get_running_loop()
        deadline = None if wait_seconds is None else loop.time() + wait_seconds
        while not self.closed:
            remaining = None if deadline is None else max(deadline - loop.time(), 0.0)
            try:
                message = await self._read(remaining)
            except Unavailable:
                # A close from another task drops the socket under this read: that is the end
                # of the stream, not a failure.
                if self.closed:
                    return None
                raise
            if message is not None and message["type"] == "message":
                return message["channel"].decode(), message["data"]
            if deadline is not None and loop.time() >= deadline:
                return None
        return None

    async def _read(self, wait_seconds: float | None) -> dict[str, Any] | None:
        with translate_errors("subscription read"):
            return await self._pubsub.get_message(
                ignore_subscribe_messages=True, timeout=wait_seconds
            )

    async def _close(self) -> None:
        # Closing must not fail because the server already went away.
        with suppress(RedisError, OSError):
            await self._pubsub.aclose()
