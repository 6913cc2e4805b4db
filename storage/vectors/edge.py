"""The embedded backend: one Qdrant Edge shard per collection, in ``{qdrant_path}/{collection}``.

``qdrant-edge-py`` is synchronous and raises bare ``Exception``s, so every call runs in a worker
thread (``asyncio.to_thread``) under the shard's lock and its errors are mapped onto
``storage.errors`` here. A shard directory may be opened by only one ``EdgeShard`` at a time,
hence the single open-shard table guarded by ``_open_lock``.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import qdrant_edge as qe

from storage.errors import InvalidData, NotFound, StorageError, Unavailable
from storage.vectors.base import (
    INDEXED_KEYWORDS,
    TENANT_KEY,
    Distance,
    FilterValue,
    Point,
    PointFilter,
    VectorHit,
    VectorStore,
    build_filter,
    check_collection_name,
    check_distance,
    check_k,
    check_vector,
    hit_from_payload,
    owned_vector,
    point_uuid,
    prepare_payload,
)

T = TypeVar("T")
_CONFIG_FILE = "edge_config.json"  # written by the engine next to its segments
_DISTANCES = {"cosine": qe.Distance.Cosine, "dot": qe.Distance.Dot, "euclid": qe.Distance.Euclid}
_INVALID_MARKERS = ("dimension", "wrong input", "incompatible", "bad input", "bad request")


@dataclass
class _OpenShard:
    shard: qe.EdgeShard
    dim: int
    distance: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    held: int | None = None  # the descriptor of the shard's lock file (``_hold``)


_HELD_ELSEWHERE = (
    "the embedded vector store is held open elsewhere (e.g. by a running server): write "
    "through it (train with the trainModel mutation) or configure RECSERVE_QDRANT_URL"
)
_LOCK_FILE = ".recserve.lock"


def _hold(folder: Path) -> int:
    """An exclusive lock on the shard's folder for as long as this process keeps it open: a
    shard must be opened by one process only. Qdrant's own write-ahead log lock did that for
    shards that have a log; collections are created without one (see ``_create_sync``)."""
    folder.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(folder / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as error:
        os.close(descriptor)
        raise Unavailable(_HELD_ELSEWHERE) from error
    return descriptor


def _translate(error: Exception) -> StorageError:
    message = str(error)
    if any(marker in message.lower() for marker in _INVALID_MARKERS):
        return InvalidData(message)
    if "wouldblock" in message.lower():  # the shard's WAL is locked by another process
        return Unavailable(_HELD_ELSEWHERE)
    return Unavailable(f"embedded Qdrant failed: {message}")


def _edge_filter(spec: PointFilter) -> qe.Filter:
    must: list[Any] = [qe.FieldCondition(TENANT_KEY, match=qe.MatchValue(spec.tenant_id))]
    for key, value in spec.matches:
        match = qe.MatchAny(value) if isinstance(value, list) else qe.MatchValue(value)
        must.append(qe.FieldCondition(key, match=match))
    must_not: list[Any] = [qe.FieldCondition(k, match=qe.MatchAny(v)) for k, v in spec.unmatched]
    if spec.excluded:
        must_not.append(qe.HasIdCondition({uuid.UUID(i) for i in spec.excluded}))
    return qe.Filter(must=must, must_not=must_not or None)


class EdgeVectorStore(VectorStore):
    """Embedded Qdrant engine: no server, shards on the local disk."""

    def __init__(self, path: str | Path) -> None:
        self._root = Path(path)
        self._shards: dict[str, _OpenShard] = {}
        self._open_lock = threading.Lock()
        self._closed = False

    async def ensure_collection(self, name: str, dim: int, distance: Distance = "cosine") -> None:
        check_collection_name(name)
        check_distance(distance)
        if dim < 1:
            raise InvalidData(f"dim must be at least 1, got {dim}")
        await asyncio.to_thread(self._ensure_sync, name, dim, distance)

    async def upsert(self, collection: str, points: Iterable[Point]) -> None:
        opened = await self._shard(collection)
        edge_points = [
            qe.Point(point_uuid(pid), check_vector(vec, opened.dim), prepare_payload(pid, payload))
            for pid, vec, payload in points
        ]
        if edge_points:
            operation = qe.UpdateOperation.upsert_points(edge_points)
            await self._write(opened, operation)

    async def delete(self, collection: str, ids: Iterable[str]) -> None:
        opened = await self._shard(collection)
        engine_ids: list[Any] = [point_uuid(i) for i in ids]
        if engine_ids:
            operation = qe.UpdateOperation.delete_points(engine_ids)
            await self._write(opened, operation)

    async def delete_by_filter(self, collection: str, tenant_id: str) -> None:
        opened = await self._shard(collection)
        operation = qe.UpdateOperation.delete_points_by_filter(
            _edge_filter(build_filter(tenant_id, None, None))
        )
        await self._write(opened, operation)

    async def search(
        self,
        collection: str,
        vector: Sequence[float],
        k: int,
        tenant_id: str,
        filter: Mapping[str, FilterValue] | None = None,
        exclude_ids: Iterable[str] | None = None,
    ) -> list[VectorHit]:
        check_k(k)
        opened = await self._shard(collection)
        request = qe.QueryRequest(
            limit=k,
            query=qe.Query.Nearest(check_vector(vector, opened.dim)),
            filter=_edge_filter(build_filter(tenant_id, filter, exclude_ids)),
            with_payload=True,
        )
        scored = await self._call(opened, lambda s: s.query(request))
        return [hit_from_payload(p.id, p.score, p.payload) for p in scored]

    async def get_vector(self, collection: str, point_id: str, tenant_id: str) -> list[float]:
        opened = await self._shard(collection)
        records = await self._call(opened, lambda s: s.retrieve([point_uuid(point_id)], True, True))
        return owned_vector(records[0] if records else None, point_id, tenant_id)

    async def count(self, collection: str, tenant_id: str) -> int:
        opened = await self._shard(collection)
        request = qe.CountRequest(
            exact=True, filter=_edge_filter(build_filter(tenant_id, None, None))
        )
        return await self._call(opened, lambda s: s.count(request))

    async def close(self) -> None:
        await asyncio.to_thread(self._close_sync)

    # -- synchronous internals, always run in a worker thread ---------------------------------

    async def _shard(self, collection: str) -> _OpenShard:
        check_collection_name(collection)
        return await asyncio.to_thread(self._open_sync, collection)

    async def _call(self, opened: _OpenShard, operation: Callable[[qe.EdgeShard], T]) -> T:
        def run() -> T:
            with opened.lock:
                try:
                    return operation(opened.shard)
                except Exception as error:
                    raise _translate(error) from error

        return await asyncio.to_thread(run)

    async def _write(self, opened: _OpenShard, operation: qe.UpdateOperation) -> None:
        def apply(shard: qe.EdgeShard) -> None:
            shard.update(operation)
            shard.flush()

        await self._call(opened, apply)

    def _open_sync(self, name: str) -> _OpenShard:
        with self._open_lock:
            self._check_open()
            if name in self._shards:
                return self._shards[name]
            config_path = self._root / name / _CONFIG_FILE
            if not config_path.is_file():
                raise NotFound(f"vector collection {name!r} does not exist")
            vectors = json.loads(config_path.read_text())["vectors"][""]
            held = _hold(self._root / name)
            try:
                shard = qe.EdgeShard.load(str(self._root / name))
            except Exception as error:
                os.close(held)
                raise _translate(error) from error
            opened = _OpenShard(
                shard, int(vectors["size"]), str(vectors["distance"]).lower(), held=held
            )
            self._shards[name] = opened
            return opened

    def _ensure_sync(self, name: str, dim: int, distance: str) -> None:
        try:
            opened = self._open_sync(name)
        except NotFound:
            opened = self._create_sync(name, dim, distance)
        if (opened.dim, opened.distance) != (dim, distance):
            raise InvalidData(
                f"collection {name!r} has dim={opened.dim}, distance={opened.distance}; "
                f"asked for dim={dim}, distance={distance}"
            )

    def _create_sync(self, name: str, dim: int, distance: str) -> _OpenShard:
        with self._open_lock:
            self._check_open()
            if name in self._shards:  # another thread created it meanwhile
                return self._shards[name]
            # Cold: the vectors' memory-mapped chunks are paged in as searches read them. The
            # default (Cached) makes every load of the shard read its whole preallocated chunk
            # into memory: 32 MiB and more per collection whatever its size, which showed in
            # the soak as the `vectors` replica growing by ~40 MiB per collection it opened.
            params = qe.EdgeVectorParams(
                size=dim, distance=_DISTANCES[distance], memory=qe.Memory.Cold
            )
            # No write-ahead log: edge shards never truncate theirs, so every re-upsert of a
            # catalogue's vectors (each training) grew it, on disk and in the replica's mapped
            # memory (the soak: ~3 MiB per training, for good). Each write is flushed instead
            # (``_write``), so what a call wrote is on disk when it returns. Shards created with
            # a log keep it (qdrant-edge cannot turn it off later).
            config = qe.EdgeConfig(vectors=params, wal_enabled=False)
            held = _hold(self._root / name)
            try:
                shard = qe.EdgeShard.create(str(self._root / name), config)
                for key in INDEXED_KEYWORDS:
                    params = qe.KeywordIndexParams(is_tenant=key == TENANT_KEY)
                    shard.update(qe.UpdateOperation.create_field_index(key, params))
                shard.flush()
            except Exception as error:
                os.close(held)
                raise _translate(error) from error
            opened = _OpenShard(shard, dim, distance, held=held)
            self._shards[name] = opened
            return opened

    def _close_sync(self) -> None:
        with self._open_lock:
            self._closed = True
            shards, self._shards = list(self._shards.values()), {}
        for opened in shards:
            with opened.lock:
                opened.shard.flush()
                opened.shard.close()
                if opened.held is not None:
                    os.close(opened.held)  # and with it the lock

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable("the vector store is closed")
