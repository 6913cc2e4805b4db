"""The vector store interface shared by every backend, and the rules every backend applies.

Points carry our string ids; Qdrant wants UUIDs or integers, so ids are mapped with ``uuid5``
(deterministic: the same item always lands on the same point, which makes re-upserts overwrite)
and the original id travels in the payload under ``ORIGINAL_ID_KEY``. Every search, count and
bulk delete is scoped by the payload field ``tenant_id``: the tenant is a required argument,
never an optional filter, so forgetting it is a type error rather than a data leak.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from storage.errors import InvalidData, NotFound

Distance = Literal["cosine", "dot", "euclid"]
DISTANCES: tuple[str, ...] = ("cosine", "dot", "euclid")
TENANT_KEY = "tenant_id"
ORIGINAL_ID_KEY = "_point_id"
# Fields the stores index for fast filtering; tenant_id is also the engine's tenant key.
INDEXED_KEYWORDS: tuple[str, ...] = (TENANT_KEY, "category")
_COLLECTION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_ID_NAMESPACE = uuid.UUID("5d8f0c3e-6b1a-4c0e-9f7e-3a2b1c0d9e8f")

Point = tuple[str, Sequence[float], Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class NoneOf:
    """A filter value that keeps points whose field is none of ``values`` (or absent)."""

    values: tuple[str, ...]


FilterValue = str | int | bool | Sequence[str] | Sequence[int] | NoneOf


@dataclass(frozen=True, slots=True)
class VectorHit:
    """One search result: our string id, the engine's score, and the payload as upserted."""

    id: str
    score: float
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PointFilter:
    """A backend-neutral filter: tenant scope, exact/any-of matches, fields that must match
    none of some values, and excluded point ids."""

    tenant_id: str
    matches: tuple[tuple[str, FilterValue], ...] = ()
    excluded: tuple[str, ...] = ()  # engine ids (uuid5 strings)
    unmatched: tuple[tuple[str, list[str]], ...] = ()  # (field, values it must not have)


def point_uuid(point_id: str) -> str:
    """The engine id for one of our ids (stable across processes and machines)."""
    return str(uuid.uuid5(_ID_NAMESPACE, point_id))


def check_collection_name(name: str) -> None:
    # Edge collections are folders, so a name must never walk out of the store's root.
    if not _COLLECTION_NAME.fullmatch(name):
        raise InvalidData(f"invalid collection name {name!r}: use letters, digits, '_' or '-'")


def check_k(k: int) -> None:
    if k < 1:
        raise InvalidData(f"k must be at least 1, got {k}")


def check_distance(distance: str) -> None:
    if distance not in DISTANCES:
        raise InvalidData(f"unknown distance {distance!r}; expected one of {DISTANCES}")


def check_vector(vector: Sequence[float], dim: int | None) -> list[float]:
    values = [float(x) for x in vector]
    if dim is not None and len(values) != dim:
        raise InvalidData(f"vector has dimension {len(values)}, the collection expects {dim}")
    return values


def prepare_payload(point_id: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """The stored payload: the caller's fields plus the original id; tenant_id is mandatory."""
    tenant = payload.get(TENANT_KEY)
    if not isinstance(tenant, str) or not tenant:
        raise InvalidData(f"point {point_id!r} has no {TENANT_KEY!r} in its payload")
    return {**payload, ORIGINAL_ID_KEY: point_id}


def hit_from_payload(
    engine_id: object, score: float, payload: Mapping[str, Any] | None
) -> VectorHit:
    stored = dict(payload or {})
    original = stored.pop(ORIGINAL_ID_KEY, None)
    return VectorHit(
        id=str(original if original is not None else engine_id), score=score, payload=stored
    )


def owned_vector(record: Any, point_id: str, tenant_id: str) -> list[float]:
    """The vector of a retrieved record, refusing one that belongs to another tenant as if it
    did not exist."""
    payload = dict(getattr(record, "payload", None) or {})
    if record is None or payload.get(TENANT_KEY) != tenant_id:
        raise NotFound(f"no vector for {point_id!r}")
    vector = record.vector
    if isinstance(vector, Mapping):  # a collection's single unnamed vector may come keyed by ""
        vector = next(iter(vector.values()))
    return [float(x) for x in vector]


def build_filter(
    tenant_id: str,
    filter: Mapping[str, FilterValue] | None,
    exclude_ids: Iterable[str] | None,
) -> PointFilter:
    """Validate a caller's filter dict: scalar = exact match, list/tuple = any of the values,
    ``NoneOf`` = none of them."""
    if not tenant_id:
        raise InvalidData("tenant_id is required")
    matches: list[tuple[str, FilterValue]] = []
    unmatched: list[tuple[str, list[str]]] = []
    for key, value in (filter or {}).items():
        if key in (TENANT_KEY, ORIGINAL_ID_KEY):
            raise InvalidData(f"{key!r} cannot be filtered on directly")
        if isinstance(value, NoneOf):
            if value.values:
                unmatched.append((key, list(value.values)))
            continue
        if isinstance(value, list | tuple | set | frozenset):
            if not value:
                raise InvalidData(f"filter {key!r} has an empty list of values")
            value = list(value)
        elif not isinstance(value, str | int | bool):
            raise InvalidData(f"filter {key!r} must be a str, int, bool or a list of them")
        matches.append((key, value))
    excluded = tuple(point_uuid(i) for i in (exclude_ids or ()))
    return PointFilter(
        tenant_id=tenant_id, matches=tuple(matches), excluded=excluded, unmatched=tuple(unmatched)
    )


class VectorStore(ABC):
    """Async vector store: collections of points, always searched within one tenant."""

    @abstractmethod
    async def ensure_collection(self, name: str, dim: int, distance: Distance = "cosine") -> None:
        """Create the collection if absent; an existing one must have the same dim/distance."""

    @abstractmethod
    async def upsert(self, collection: str, points: Iterable[Point]) -> None:
        """Insert or overwrite points ``(id, vector, payload)``; payload needs ``tenant_id``."""

    @abstractmethod
    async def delete(self, collection: str, ids: Iterable[str]) -> None:
        """Delete points by our ids (unknown ids are ignored)."""

    @abstractmethod
    async def delete_by_filter(self, collection: str, tenant_id: str) -> None:
        """Delete every point of one tenant."""

    @abstractmethod
    async def search(
        self,
        collection: str,
        vector: Sequence[float],
        k: int,
        tenant_id: str,
        filter: Mapping[str, FilterValue] | None = None,
        exclude_ids: Iterable[str] | None = None,
    ) -> list[VectorHit]:
        """The ``k`` nearest points of ``tenant_id``, best first."""

    @abstractmethod
    async def count(self, collection: str, tenant_id: str) -> int:
        """How many points ``tenant_id`` has in the collection."""

    @abstractmethod
    async def get_vector(self, collection: str, point_id: str, tenant_id: str) -> list[float]:
        """The stored vector of ``point_id``; NotFound unless the point is ``tenant_id``'s."""

    async def get_vectors(
        self, collection: str, point_ids: Sequence[str], tenant_id: str
    ) -> dict[str, list[float]]:
        """The stored vectors of those of ``point_ids`` the tenant has; the others (or all, when
        the collection does not exist) are left out."""
        found: dict[str, list[float]] = {}
        for point_id in point_ids:
            with contextlib.suppress(NotFound):
                found[point_id] = await self.get_vector(collection, point_id, tenant_id)
        return found

    async def similar_to(
        self,
        collection: str,
        point_id: str,
        k: int,
        tenant_id: str,
        filter: Mapping[str, FilterValue] | None = None,
    ) -> list[VectorHit]:
        """The ``k`` nearest points of the tenant to one of its own points, itself excluded."""
        vector = await self.get_vector(collection, point_id, tenant_id)
        return await self.search(collection, vector, k, tenant_id, filter, exclude_ids=[point_id])

    @abstractmethod
    async def close(self) -> None:
        """Release files / connections; the store is unusable afterwards."""
