"""The embedded vector store as a deployment, so every replica of the Serve app can reach it.

The embedded Qdrant store (``qdrant-edge-py``) is a folder that only one process may hold open.
Without a Qdrant server (``RECSERVE_QDRANT_URL`` unset) the app therefore runs one ``vectors``
replica that holds it; the combiner (new items' content vectors, similar items, content
candidates) and the training tasks (the catalogue's vectors after a fit) reach it through
``RemoteVectorStore``, a ``VectorStore`` whose every call is one request to that replica. With a
server configured the deployment is not part of the app: every process talks to the server.

Errors travel as values, not as exceptions: a ``storage.errors`` error raised in the replica
comes back as its class name and message and is raised again in the caller, so ``NotFound``
still means "no such collection or point" on the other side of the hop.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from storage import errors
from storage.errors import StorageError
from storage.settings import Settings
from storage.vectors import SharedEdgeStore
from storage.vectors.base import Distance, FilterValue, Point, VectorHit, VectorStore

# The deployment's name in the app (one per app; ``deployments.app.compose`` adds it).
NAME = "vectors"
_ERRORS: dict[str, type[StorageError]] = {
    cls.__name__: cls
    for cls in (
        errors.NotFound,
        errors.Conflict,
        errors.InvalidData,
        errors.Unavailable,
        StorageError,
    )
}
# Methods a caller may invoke (the VectorStore interface, minus ``close``).
_METHODS = frozenset(
    {"ensure_collection", "upsert", "delete", "delete_by_filter", "search", "count"}
    | {"get_vector", "get_vectors", "similar_to"}
)


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0.05}, max_ongoing_requests=256)
class VectorStoreServer:
    """Holds the embedded store of ``Settings().qdrant_path``: exactly one replica, always."""

    def __init__(self) -> None:
        self._store = SharedEdgeStore(Settings().qdrant_path)

    async def call(self, method: str, args: tuple[Any, ...]) -> tuple[str, Any]:
        """``("ok", result)`` or ``("error", (class name, message))``."""
        if method not in _METHODS:
            return "error", ("InvalidData", f"unknown vector store method {method!r}")
        try:
            return "ok", await getattr(self._store, method)(*args)
        except StorageError as error:
            return "error", (type(error).__name__, str(error))

    async def __del__(self) -> None:
        await self._store.close()


class RemoteVectorStore(VectorStore):
    """The ``VectorStore`` interface over a ``VectorStoreServer`` handle (picklable: training
    tasks get it as an argument)."""

    def __init__(self, handle: DeploymentHandle) -> None:
        self._handle = handle

    async def _call(self, method: str, *args: Any) -> Any:
        status, value = await self._handle.call.remote(method, args)
        if status == "ok":
            return value
        name, message = value
        raise _ERRORS.get(name, StorageError)(message)

    async def ensure_collection(self, name: str, dim: int, distance: Distance = "cosine") -> None:
        await self._call("ensure_collection", name, dim, distance)

    async def upsert(self, collection: str, points: Iterable[Point]) -> None:
        await self._call("upsert", collection, [(i, list(v), dict(p)) for i, v, p in points])

    async def delete(self, collection: str, ids: Iterable[str]) -> None:
        await self._call("delete", collection, list(ids))

    async def delete_by_filter(self, collection: str, tenant_id: str) -> None:
        await self._call("delete_by_filter", collection, tenant_id)

    async def search(
        self,
        collection: str,
        vector: Sequence[float],
        k: int,
        tenant_id: str,
        filter: Mapping[str, FilterValue] | None = None,
        exclude_ids: Iterable[str] | None = None,
    ) -> list[VectorHit]:
        excluded = None if exclude_ids is None else list(exclude_ids)
        filters = None if filter is None else dict(filter)
        return await self._call("search", collection, list(vector), k, tenant_id, filters, excluded)

    async def count(self, collection: str, tenant_id: str) -> int:
        return await self._call("count", collection, tenant_id)

    async def get_vector(self, collection: str, point_id: str, tenant_id: str) -> list[float]:
        return await self._call("get_vector", collection, point_id, tenant_id)

    async def get_vectors(
        self, collection: str, point_ids: Sequence[str], tenant_id: str
    ) -> dict[str, list[float]]:
        return await self._call("get_vectors", collection, list(point_ids), tenant_id)

    async def similar_to(
        self,
        collection: str,
        point_id: str,
        k: int,
        tenant_id: str,
        filter: Mapping[str, FilterValue] | None = None,
    ) -> list[VectorHit]:
        filters = None if filter is None else dict(filter)
        return await self._call("similar_to", collection, point_id, k, tenant_id, filters)

    async def close(self) -> None:
        """Nothing to release here: the replica keeps the store open for every caller."""
