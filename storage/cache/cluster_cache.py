"""The cache on a Redis Cluster (``redis+cluster://host:port,host:port,...``).

Multi-key work is split by hash slot: each slot's share of a pipeline runs as its own MULTI/EXEC
on the node owning it, so keys hash-tagged alike (``rec:{tenant}:...``) change together.
Pub/sub uses regular channels: the cluster bus forwards a PUBLISH on any node to subscribers on
every node, which suits the low-volume subscription events this product sends.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from redis.asyncio.cluster import ClusterNode, RedisCluster

from storage.cache.base import PipelineOp, Subscription
from storage.cache.redis_cache import fail_fast_retry
from storage.cache.redis_common import (
    CONNECTION_HEADROOM,
    RedisFamilyCache,
    RedisSubscription,
    scan_pattern,
    translate_errors,
)
from storage.errors import InvalidData

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
_FLOAT_OPTIONS = ("socket_timeout", "socket_connect_timeout")
_DELETE_BATCH = 500


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """Startup nodes and client options from ``redis+cluster://[user:pass@]h:p,h:p[?opts]``."""
    parts = urlsplit(url)
    if parts.scheme not in CLUSTER_SCHEMES:
        raise InvalidData(f"not a Redis Cluster URL: {url!r}")
    credentials, _, hosts = parts.netloc.rpartition("@")
    options: dict[str, Any] = {"ssl": parts.scheme == "rediss+cluster"}
    if credentials:
        user, _, password = credentials.partition(":")
        options.update(username=unquote(user) or None, password=unquote(password) or None)
    for name, value in parse_qsl(parts.query):
        if name in _FLOAT_OPTIONS:
            options[name] = float(value)
    nodes = []
    for address in filter(None, hosts.split(",")):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise InvalidData(f"cluster node {address!r} is not host:port")
        nodes.append((host, int(port)))
    if not nodes:
        raise InvalidData(f"no cluster nodes in {url!r}")
    return nodes, options


def hash_tag_of(prefix: str) -> str | None:
    """The hash tag every key starting with ``prefix`` shares, if the prefix fixes one."""
    start = prefix.find("{")
    end = prefix.find("}", start + 1) if start >= 0 else -1
    return prefix[start + 1 : end] if end > start + 1 else None


class RedisClusterCache(RedisFamilyCache):
    """redis.asyncio.cluster client; transactional per hash slot."""

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
    ) -> None:
        nodes, options = parse_cluster_url(url)
        options.setdefault("socket_timeout", socket_timeout)
        options.setdefault("socket_connect_timeout", connect_timeout)
        client = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in nodes],
            retry=fail_fast_retry(retries),
            # Per node; the semaphore bounds the total, so no single node can run out either.
            max_connections=max_concurrency + CONNECTION_HEADROOM,
            **options,
        )
        super().__init__(
            client,
            max_concurrency=max_concurrency,
            default_ttl=default_ttl,
            compress_min_bytes=compress_min_bytes,
        )
        self._topology_known = False
        self._topology_lock = asyncio.Lock()

    async def _ready(self) -> None:
        # Commands racing into redis-py's lazy discovery can have their fresh connections closed
        # under them by a concurrent re-initialization, so discovery happens once, up front.
        if self._topology_known:
            return
        async with self._topology_lock:
            if not self._topology_known:
                await self._client.initialize()
                self._topology_known = True

    async def _get_many_raw(self, keys: list[str]) -> list[bytes | None]:
        async with self._command("get"):
            return list(await self._client.mget_nonatomic(keys))

    async def _execute_pipeline(self, ops: list[PipelineOp]) -> list[Any]:
        with translate_errors("pipeline"):
            await self._ready()
        by_slot: dict[int, list[int]] = defaultdict(list)
        for index, op in enumerate(ops):
            by_slot[self._client.keyslot(op.key)].append(index)
        groups = list(by_slot.values())
        outcomes = await asyncio.gather(*(self._run_in_slot([ops[i] for i in g]) for g in groups))
        results: list[Any] = [None] * len(ops)
        for group, outcome in zip(groups, outcomes, strict=True):
            for index, value in zip(group, outcome, strict=True):
                results[index] = value
        return results

    async def _run_in_slot(self, ops: list[PipelineOp]) -> list[Any]:
        return await self._run_ops(ops, transaction=True)

    async def _execute_batch(self, ops: list[PipelineOp]) -> list[Any]:
        # Without MULTI, redis-py sends one pipeline per node instead of one per slot: many
        # keys spread over the cluster cost a round trip per node, not per key.
        return await self._run_ops(ops, transaction=False)

    async def delete_prefix(self, prefix: str) -> int:
        with translate_errors("delete_prefix"):
            await self._ready()
            # A prefix that fixes the hash tag lives in one slot: scan only the node owning it.
            if hash_tag_of(prefix) is not None:
                nodes = [self._client.get_node_from_key(prefix)]
            else:
                nodes = self._client.get_primaries()
            deleted = 0
            batch: list[str] = []
            pattern = scan_pattern(prefix)
            async for key in self._client.scan_iter(match=pattern, count=1000, target_nodes=nodes):
                batch.append(key.decode())
                if len(batch) >= _DELETE_BATCH:
                    deleted += await self._delete(batch)
                    batch = []
        return deleted + (await self._delete(batch) if batch else 0)

    async def _subscribe(self, channels: tuple[str, ...]) -> Subscription:
        with translate_errors("subscribe"):
            await self._ready()
            pubsub = self._client.pubsub()
            await pubsub.subscribe(*channels)
        return RedisSubscription(pubsub, channels)
