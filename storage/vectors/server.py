"""The server backend: a Qdrant server (or cluster) through ``qdrant_client.AsyncQdrantClient``.

The client is injectable so tests run the same code path against ``AsyncQdrantClient(":memory:")``.
Each collection's dimension is cached after the first look-up, so a wrong-sized vector is refused
here with ``InvalidData`` instead of depending on how each client mode phrases its error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

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

_DISTANCES = {
    "cosine": models.Distance.COSINE,
    "dot": models.Distance.DOT,
    "euclid": models.Distance.EUCLID,
}
_UPSERT_BATCH = 512  # keeps each HTTP request well under the server's body-size limit


@asynccontextmanager
async def _translated(collection: str) -> AsyncIterator[None]:
    try:
        yield
    except StorageError:
        raise
    except UnexpectedResponse as error:
        if error.status_code == 404:
            raise NotFound(f"vector collection {collection!r} does not exist") from error
        if error.status_code in (400, 422):
            raise InvalidData(str(error)) from error
        raise Unavailable(f"Qdrant answered {error.status_code}: {error}") from error
    except (ResponseHandlingException, httpx.TransportError, OSError, TimeoutError) as error:
        raise Unavailable(f"Qdrant is unreachable: {error}") from error
    except ValueError as error:  # local (":memory:" / path) mode raises ValueError
        if "not found" in str(error).lower():
            raise NotFound(f"vector collection {collection!r} does not exist") from error
        raise InvalidData(str(error)) from error


def _server_filter(spec: PointFilter) -> models.Filter:
    must: list[Any] = [
        models.FieldCondition(key=TENANT_KEY, match=models.MatchValue(value=spec.tenant_id))
    ]
    for key, value in spec.matches:
        match: Any = (
            models.MatchAny(any=value)
            if isinstance(value, list)
            else models.MatchValue(value=value)
        )
        must.append(models.FieldCondition(key=key, match=match))
    must_not: list[Any] = [
        models.FieldCondition(key=key, match=models.MatchAny(any=values))
        for key, values in spec.unmatched
    ]
    if spec.excluded:
        must_not.append(models.HasIdCondition(has_id=list(spec.excluded)))
    return models.Filter(must=must, must_not=must_not or None)


class QdrantServerStore(VectorStore):
    """Vector store on a Qdrant server, with payload indexes on tenant_id and category."""

    def __init__(
        self,
        client: AsyncQdrantClient | None = None,
        *,
        url: str | None = None,
        api_key: str | None = None,
        timeout: int = 10,
    ) -> None:
        if client is None:
            if url is None:
                raise ValueError("QdrantServerStore needs a client or a url")
            # The compatibility probe is a blocking HTTP call in the constructor: keep it out of
            # the event loop (a version mismatch still surfaces on the first request).
            client = AsyncQdrantClient(
                url=url, api_key=api_key, timeout=timeout, check_compatibility=False
            )
        self._client = client
        self._dims: dict[str, int] = {}

    async def ensure_collection(self, name: str, dim: int, distance: Distance = "cosine") -> None:
        check_collection_name(name)
        check_distance(distance)
        if dim < 1:
            raise InvalidData(f"dim must be at least 1, got {dim}")
        async with _translated(name):
            if not await self._client.collection_exists(name):
                await self._create(name, dim, distance)
            params = await self._vector_params(name)
        if (params.size, params.distance) != (dim, _DISTANCES[distance]):
            raise InvalidData(
                f"collection {name!r} has dim={params.size}, distance={params.distance}; "
                f"asked for dim={dim}, distance={distance}"
            )

    async def upsert(self, collection: str, points: Iterable[Point]) -> None:
        dim = await self._dim(collection)
        structs = [
            models.PointStruct(
                id=point_uuid(pid), vector=check_vector(vec, dim), payload=prepare_payload(pid, pl)
            )
            for pid, vec, pl in points
        ]
        async with _translated(collection):
            for start in range(0, len(structs), _UPSERT_BATCH):
                batch = structs[start : start + _UPSERT_BATCH]
                await self._client.upsert(collection, points=batch, wait=True)

    async def delete(self, collection: str, ids: Iterable[str]) -> None:
        check_collection_name(collection)
        selector = models.PointIdsList(points=[point_uuid(i) for i in ids])
        if selector.points:
            async with _translated(collection):
                await self._client.delete(collection, points_selector=selector, wait=True)

    async def delete_by_filter(self, collection: str, tenant_id: str) -> None:
        check_collection_name(collection)
        selector = models.FilterSelector(filter=_server_filter(build_filter(tenant_id, None, None)))
        async with _translated(collection):
            await self._client.delete(collection, points_selector=selector, wait=True)

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
        query = check_vector(vector, await self._dim(collection))
        query_filter = _server_filter(build_filter(tenant_id, filter, exclude_ids))
        async with _translated(collection):
            response = await self._client.query_points(
                collection, query=query, query_filter=query_filter, limit=k, with_payload=True
            )
        return [hit_from_payload(p.id, p.score, p.payload) for p in response.points]

    async def get_vector(self, collection: str, point_id: str, tenant_id: str) -> list[float]:
        async with _translated(collection):
            records = await self._client.retrieve(
                collection, ids=[point_uuid(point_id)], with_payload=True, with_vectors=True
            )
        return owned_vector(records[0] if records else None, point_id, tenant_id)

    async def count(self, collection: str, tenant_id: str) -> int:
        check_collection_name(collection)
        count_filter = _server_filter(build_filter(tenant_id, None, None))
        async with _translated(collection):
            result = await self._client.count(collection, count_filter=count_filter, exact=True)
        return result.count

    async def close(self) -> None:
        await self._client.close()

    async def _create(self, name: str, dim: int, distance: str) -> None:
        vectors = models.VectorParams(size=dim, distance=_DISTANCES[distance])
        try:
            await self._client.create_collection(name, vectors_config=vectors)
        except UnexpectedResponse as error:
            if error.status_code != 409:  # 409: another replica created it first, which is fine
                raise
            return
        for key in INDEXED_KEYWORDS:
            schema = models.KeywordIndexParams(
                type=models.KeywordIndexType.KEYWORD, is_tenant=key == TENANT_KEY
            )
            await self._client.create_payload_index(name, key, field_schema=schema, wait=True)

    async def _vector_params(self, name: str) -> models.VectorParams:
        info = await self._client.get_collection(name)
        params = info.config.params.vectors
        if not isinstance(params, models.VectorParams):
            raise InvalidData(f"collection {name!r} uses named vectors, which this store does not")
        self._dims[name] = params.size
        return params

    async def _dim(self, collection: str) -> int:
        check_collection_name(collection)
        if collection not in self._dims:
            async with _translated(collection):
                await self._vector_params(collection)
        return self._dims[collection]
