"""The embedded default: a cache and pub/sub living in this process.

Every operation runs without awaiting in its critical section, so on one event loop each call
(and each pipeline) is atomic, exactly like a Lua script or MULTI block on Redis. Values are kept
encoded, so callers can never mutate a cached object through a reference they were handed.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from storage.cache.base import Cache, PipelineOp, Subscription, WindowResult
from storage.cache.codec import decode, encode
from storage.errors import InvalidData

# Expired entries are dropped lazily on access, plus a full sweep every this many writes, so
# keys nobody reads again cannot pile up forever.
_SWEEP_EVERY_WRITES = 1000


@dataclass(slots=True)
class _Entry:
    value: bytes | deque[float]
    expires_at: float | None = None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now


class _MemorySubscription(Subscription):
    def __init__(self, hub: dict[str, set[asyncio.Queue]], channels: tuple[str, ...]) -> None:
        super().__init__(channels)
        self._hub = hub
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        for channel in channels:
            hub.setdefault(channel, set()).add(self._queue)

    async def _next_raw(self, wait_seconds: float | None) -> tuple[str, bytes] | None:
        try:
            return await asyncio.wait_for(self._queue.get(), wait_seconds)
        except TimeoutError:
            return None

    async def _close(self) -> None:
        for channel in self.channels:
            listeners = self._hub.get(channel)
            if listeners is not None:
                listeners.discard(self._queue)
                if not listeners:
                    del self._hub[channel]


class InProcessCache(Cache):
    """Dictionary-backed cache with TTLs, sliding windows and asyncio-queue pub/sub."""

    def __init__(self, *, default_ttl: float | None = None, compress_min_bytes: int = 4096) -> None:
        super().__init__(default_ttl=default_ttl, compress_min_bytes=compress_min_bytes)
        self._entries: dict[str, _Entry] = {}
        self._channels: dict[str, set[asyncio.Queue]] = {}
        self._writes = 0

    def _live(self, key: str, now: float) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None and entry.expired(now):
            del self._entries[key]
            return None
        return entry

    def _store(self, key: str, value: bytes | deque[float], ttl: float | None) -> None:
        now = time.monotonic()
        self._entries[key] = _Entry(value, None if ttl is None else now + ttl)
        self._writes += 1
        if self._writes % _SWEEP_EVERY_WRITES == 0:
            for stale in [k for k, e in self._entries.items() if e.expired(now)]:
                del self._entries[stale]

    def _bytes_of(self, key: str, entry: _Entry) -> bytes:
        if not isinstance(entry.value, bytes):
            raise InvalidData(f"key {key!r} holds a rate-limit window, not a value")
        return entry.value

    async def _get_many_raw(self, keys: list[str]) -> list[bytes | None]:
        now = time.monotonic()
        entries = [self._live(key, now) for key in keys]
        # Like MGET, a key holding a rate-limit window reads as a miss rather than an error.
        return [e.value if e is not None and isinstance(e.value, bytes) else None for e in entries]

    async def _set_many_raw(self, items: list[tuple[str, bytes]], ttl: float | None) -> None:
        for key, payload in items:
            self._store(key, payload, ttl)

    async def _delete(self, keys: list[str]) -> int:
        now = time.monotonic()
        return sum(self._pop_live(key, now) for key in keys)

    def _pop_live(self, key: str, now: float) -> bool:
        entry = self._entries.pop(key, None)
        return entry is not None and not entry.expired(now)

    async def delete_prefix(self, prefix: str) -> int:
        now = time.monotonic()
        doomed = [key for key in self._entries if key.startswith(prefix)]
        return sum(self._pop_live(key, now) for key in doomed)

    async def _incr(self, key: str, amount: int, ttl: float | None) -> int:
        return self._incr_now(key, amount, ttl)

    def _incr_now(self, key: str, amount: int, ttl: float | None) -> int:
        entry = self._live(key, time.monotonic())
        current = 0 if entry is None else decode(self._bytes_of(key, entry))
        if not isinstance(current, int) or isinstance(current, bool):
            raise InvalidData(f"key {key!r} does not hold an integer")
        value = current + amount
        if entry is None:
            self._store(key, encode(value, self.compress_min_bytes), ttl)
        else:
            entry.value = encode(value, self.compress_min_bytes)
            if entry.expires_at is None and ttl is not None:
                entry.expires_at = time.monotonic() + ttl
        return value

    async def _sliding_window(
        self, key: str, limit: int, window_seconds: float, cost: int
    ) -> WindowResult:
        now = time.monotonic()
        entry = self._live(key, now)
        if entry is not None and not isinstance(entry.value, deque):
            raise InvalidData(f"key {key!r} holds a value, not a rate-limit window")
        stamps: deque[float] = deque() if entry is None else entry.value  # type: ignore[assignment]
        while stamps and stamps[0] <= now - window_seconds:
            stamps.popleft()
        count = len(stamps)
        if count + cost <= limit:
            stamps.extend([now] * cost)
            self._store(key, stamps, window_seconds)
            return WindowResult(True, limit - count - cost, 0.0, count + cost)
        # Denied: wait until enough of the oldest admissions leave the window to fit ``cost``.
        must_expire = count + cost - limit
        if must_expire > count:
            retry_after = window_seconds
        else:
            retry_after = stamps[must_expire - 1] + window_seconds - now
        return WindowResult(False, max(limit - count, 0), max(retry_after, 0.0), count)

    async def _execute_pipeline(self, ops: list[PipelineOp]) -> list[Any]:
        now = time.monotonic()
        results: list[Any] = []
        for op in ops:
            if op.kind == "set":
                self._store(op.key, op.value, op.ttl)
                results.append(True)
            elif op.kind == "delete":
                results.append(self._pop_live(op.key, now))
            else:
                results.append(self._incr_now(op.key, op.amount, op.ttl))
        return results

    async def _publish_raw(self, channel: str, payload: bytes) -> int:
        listeners = self._channels.get(channel, set())
        for queue in listeners:
            queue.put_nowait((channel, payload))
        return len(listeners)

    async def _subscribe(self, channels: tuple[str, ...]) -> Subscription:
        return _MemorySubscription(self._channels, channels)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._entries.clear()
