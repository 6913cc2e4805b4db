"""Vector store: one interface, an embedded Qdrant Edge backend and a Qdrant server backend."""

from __future__ import annotations

from storage.settings import Settings
from storage.vectors.base import Point, VectorHit, VectorStore, point_uuid
from storage.vectors.edge import EdgeVectorStore
from storage.vectors.server import QdrantServerStore

__all__ = [
    "EdgeVectorStore",
    "Point",
    "QdrantServerStore",
    "VectorHit",
    "VectorStore",
    "create_vector_store",
    "point_uuid",
]


def create_vector_store(settings: Settings) -> VectorStore:
    """The server backend when ``qdrant_url`` is set, else the embedded one (``qdrant_path``)."""
    if settings.qdrant_url is None:
        return EdgeVectorStore(settings.qdrant_path)
    api_key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
    return QdrantServerStore(url=settings.qdrant_url, api_key=api_key)
