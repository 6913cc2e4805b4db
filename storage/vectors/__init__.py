"""Vector store: one interface, an embedded Qdrant Edge backend and a Qdrant server backend."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from storage.settings import Settings
from storage.vectors.base import (
    Distance,
    FilterValue,
    NoneOf,
    Point,
    VectorHit,
    VectorStore,
    point_uuid,
)
from storage.vectors.edge import EdgeVectorStore
from storage.vectors.server import QdrantServerStore

__all__ = [
    "EdgeVectorStore",
    "NoneOf",
    "Point",
    "QdrantServerStore",
    "SharedEdgeStore",
    "VectorHit",
    "VectorStore",
    "create_vector_store",
    "point_uuid",
]


def create_vector_store(settings: Settings) -> VectorStore:
    """The server backend when ``qdrant_url`` is set, else the embedded one (``qdrant_path``)."""
    if settings.qdrant_url is None:
        return SharedEdgeStore(settings.qdrant_path)
    api_key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
    return QdrantServerStore(url=settings.qdrant_url, api_key=api_key)


_open_edges: dict[Path, tuple[EdgeVectorStore, int]] = {}
_open_edges_lock = threading.Lock()


class SharedEdgeStore(VectorStore):
    """A handle on the one ``EdgeVectorStore`` this process keeps per folder.

    An embedded shard may be opened once: the single-process server holds the store to write
    new items' vectors while a training run in the same process writes the catalogue's, so both
    borrow one instance; it is closed (flushed) when the last handle closes.
    """

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path).resolve()
        self._closed = False
        with _open_edges_lock:
            store, count = _open_edges.get(self._path, (None, 0))
            if store is None:
                store = EdgeVectorStore(self._path)
            _open_edges[self._path] = (store, count + 1)
        self._store = store

    async def ensure_collection(self, name: str, dim: int, distance: Distance = "cosine") -> None:
        await self._store.ensure_collection(name, dim, distance)

    async def upsert(self, collection: str, points: Iterable[Point]) -> None:
        await self._store.upsert(collection, points)

    async def delete(self, collection: str, ids: Iterable[str]) -> None:
        await self._store.delete(collection, ids)

    async def delete_by_filter(self, collection: str, tenant_id: str) -> None:
        await self._store.delete_by_filter(collection, tenant_id)

    async def search(
        self,
        collection: str,
        vector: Sequence[float],
        k: int,
        tenant_id: str,
        filter: Mapping[str, FilterValue] | None = None,
        exclude_ids: Iterable[str] | None = None,
    ) -> list[VectorHit]:
        return await self._store.search(collection, vector, k, tenant_id, filter, exclude_ids)

    async def count(self, collection: str, tenant_id: str) -> int:
        return await self._store.count(collection, tenant_id)

    async def get_vector(self, collection: str, point_id: str, tenant_id: str) -> list[float]:
        return await self._store.get_vector(collection, point_id, tenant_id)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with _open_edges_lock:
            store, count = _open_edges[self._path]
            if count > 1:
                _open_edges[self._path] = (store, count - 1)
                return
            del _open_edges[self._path]
        await store.close()
