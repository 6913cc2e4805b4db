"""The cache interface every backend implements, and the types it speaks.

Backends implement the byte-level ``_``-methods; encoding, TTL defaults and argument checks live
here once, so the in-process, Redis and Redis Cluster caches behave the same by construction.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self

from storage.cache.codec import decode, encode
from storage.errors import InvalidData

# Pass as ``ttl`` to keep a value until it is deleted (``None`` means "the cache's default").
NEVER_EXPIRE = math.inf


def tenant_key(tenant_id: object, *parts: object) -> str:
    """``rec:{tenant}:part:part``: the hash tag puts all of a tenant's keys in one cluster slot."""
    tenant = str(tenant_id)
    if not tenant or "{" in tenant or "}" in tenant:
        raise InvalidData(f"tenant id {tenant!r} cannot be used in a cache key")
    return ":".join(["rec", "{" + tenant + "}", *(str(part) for part in parts)])


@dataclass(frozen=True, slots=True)
class WindowResult:
    """The outcome of one ``sliding_window`` call."""

    allowed: bool
    remaining: int
    retry_after_seconds: float
    count: int


@dataclass(frozen=True, slots=True)
class PipelineOp:
    """One queued pipeline step; ``value`` is already encoded, ``ttl`` already resolved."""

    kind: Literal["set", "delete", "incr"]
    key: str
    value: bytes = b""
    amount: int = 1
    ttl: float | None = None


class CachePipeline:
    """A batch of set / delete / incr run together by ``execute()`` (or on leaving ``async with``).

    Transactional where the backend allows it. ``execute()`` returns one result per queued
    operation, in order: ``True`` for a set, whether the key existed for each deleted key, the
    new value for an incr.
    """

    def __init__(self, cache: Cache) -> None:
        self._cache = cache
        self._ops: list[PipelineOp] = []
        self._executed = False

    def __len__(self) -> int:
        return len(self._ops)

    def set(self, key: str, value: Any, ttl: float | None = None) -> Self:
        payload = self._cache.encode(value)
        self._ops.append(PipelineOp("set", key, value=payload, ttl=self._cache.resolve_ttl(ttl)))
        return self

    def delete(self, *keys: str) -> Self:
        self._ops.extend(PipelineOp("delete", key) for key in keys)
        return self

    def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> Self:
        self._ops.append(PipelineOp("incr", key, amount=amount, ttl=_check_ttl(ttl)))
        return self

    async def execute(self) -> list[Any]:
        if self._executed:
            raise RuntimeError("a cache pipeline can only be executed once")
        self._executed = True
        if not self._ops:
            return []
        return await self._cache._execute_pipeline(list(self._ops))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None and not self._executed:
            await self.execute()


class Subscription(ABC):
    """An async iterator of ``(channel, message)``; close it with ``aclose()`` or ``async with``."""

    poll_seconds = 0.5

    def __init__(self, channels: tuple[str, ...]) -> None:
        self.channels = channels
        self.closed = False

    async def get(self, wait_seconds: float | None = None) -> tuple[str, Any] | None:
        """The next message, or ``None`` if none arrives within ``wait_seconds``."""
        if self.closed:
            return None
        item = await self._next_raw(wait_seconds)
        if item is None:
            return None
        channel, payload = item
        return channel, decode(payload)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> tuple[str, Any]:
        # Poll in short slices so a close from another task ends the iteration promptly.
        while not self.closed:
            item = await self.get(wait_seconds=self.poll_seconds)
            if item is not None:
                return item
        raise StopAsyncIteration

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            await self._close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @abstractmethod
    async def _next_raw(self, wait_seconds: float | None) -> tuple[str, bytes] | None: ...

    @abstractmethod
    async def _close(self) -> None: ...


def _check_ttl(ttl: float | None) -> float | None:
    if ttl is not None and not ttl > 0:
        raise InvalidData(f"ttl must be positive seconds, got {ttl!r}")
    return None if ttl is None or math.isinf(ttl) else float(ttl)


class Cache(ABC):
    """Key/value cache with counters, sliding-window rate limits, pipelines and pub/sub.

    Values are anything orjson serializes (dicts, lists, str, numbers, numpy arrays). A stored
    ``None`` reads back the same as a miss. ``ttl`` is in seconds: ``None`` uses the cache's
    ``default_ttl``, ``NEVER_EXPIRE`` keeps the value until deleted.
    """

    def __init__(self, *, default_ttl: float | None = None, compress_min_bytes: int = 4096) -> None:
        self.default_ttl = _check_ttl(default_ttl)
        self.compress_min_bytes = compress_min_bytes

    def encode(self, value: Any) -> bytes:
        return encode(value, self.compress_min_bytes)

    def resolve_ttl(self, ttl: float | None) -> float | None:
        """Seconds until expiry for a write, or ``None`` for no expiry."""
        return self.default_ttl if ttl is None else _check_ttl(ttl)

    async def get(self, key: str) -> Any | None:
        (payload,) = await self._get_many_raw([key])
        return decode(payload)

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The hits among ``keys``, as ``{key: value}``; misses are simply absent."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        payloads = await self._get_many_raw(wanted)
        return {k: decode(p) for k, p in zip(wanted, payloads, strict=True) if p is not None}

    async def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        await self._set_many_raw([(key, self.encode(value))], self.resolve_ttl(ttl))

    async def set_many(self, items: Mapping[str, Any], ttl: float | None = None) -> None:
        if items:
            encoded = [(key, self.encode(value)) for key, value in items.items()]
            await self._set_many_raw(encoded, self.resolve_ttl(ttl))

    async def delete(self, *keys: str) -> int:
        """Delete ``keys``; returns how many existed."""
        return await self._delete(list(dict.fromkeys(keys))) if keys else 0

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Add ``amount`` and return the new value; ``ttl`` is set only when the key has none."""
        return await self._incr(key, amount, _check_ttl(ttl))

    async def sliding_window(
        self, key: str, limit: int, window_seconds: float, cost: int = 1
    ) -> WindowResult:
        """Atomically admit ``cost`` units if fewer than ``limit`` were admitted in the window."""
        if limit < 0 or cost < 1 or not window_seconds > 0:
            raise InvalidData("sliding_window needs limit >= 0, cost >= 1, window_seconds > 0")
        return await self._sliding_window(key, limit, float(window_seconds), cost)

    def pipeline(self) -> CachePipeline:
        return CachePipeline(self)

    async def publish(self, channel: str, message: Any) -> int:
        """Send ``message``; returns the receiver count the backend reports."""
        return await self._publish_raw(channel, self.encode(message))

    async def subscribe(self, *channels: str) -> Subscription:
        """A subscription that is already listening when this returns."""
        if not channels:
            raise InvalidData("subscribe needs at least one channel")
        return await self._subscribe(tuple(dict.fromkeys(channels)))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abstractmethod
    async def _get_many_raw(self, keys: list[str]) -> list[bytes | None]: ...

    @abstractmethod
    async def _set_many_raw(self, items: list[tuple[str, bytes]], ttl: float | None) -> None: ...

    @abstractmethod
    async def _delete(self, keys: list[str]) -> int: ...

    @abstractmethod
    async def delete_prefix(self, prefix: str) -> int:
        """Delete every key starting with ``prefix``; returns how many were deleted."""

    @abstractmethod
    async def _incr(self, key: str, amount: int, ttl: float | None) -> int: ...

    @abstractmethod
    async def _sliding_window(
        self, key: str, limit: int, window_seconds: float, cost: int
    ) -> WindowResult: ...

    @abstractmethod
    async def _execute_pipeline(self, ops: list[PipelineOp]) -> list[Any]: ...

    @abstractmethod
    async def _publish_raw(self, channel: str, payload: bytes) -> int: ...

    @abstractmethod
    async def _subscribe(self, channels: tuple[str, ...]) -> Subscription: ...

    @abstractmethod
    async def ping(self) -> bool:
        """``True`` when the backend answers; raises ``Unavailable`` otherwise."""

    @abstractmethod
    async def close(self) -> None: ...
