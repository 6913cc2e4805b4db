"""Similar items answered by the vector store, where every replica can reach it.

Training upserts ALS item factors (``items_als``) and content vectors (``items_content``) per
tenant. With a Qdrant server configured (``RECSERVE_QDRANT_URL``) similar items come from a
nearest-neighbour search there, so a catalogue far larger than a replica's models still answers
fast. The embedded store is a folder only one process may hold open, so without a server the
trained models answer instead, as they also do when the search finds nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from storage.errors import NotFound, StorageError
from storage.settings import Settings
from storage.vectors import VectorStore, create_vector_store
from training.algorithms import REGISTRY, similarity_engines

logger = logging.getLogger(__name__)

# In the engines' similarity order (collaborative neighbours first: they reflect behaviour;
# content vectors cover cold items).
COLLECTIONS = tuple(
    collection
    for name in similarity_engines()
    if (collection := REGISTRY[name].vector_collection) is not None
)
# The collection of the engines whose user profile is a mean of item vectors (content).
CONTENT = next(
    cls.vector_collection
    for cls in REGISTRY.values()
    if cls.candidates_from_vectors and cls.vector_collection
)
# The most recent items that make up a user's content profile.
PROFILE_ITEMS = 20


class VectorSimilar:
    def __init__(self, settings: Settings, store: VectorStore | None = None) -> None:
        self._settings = settings
        self._store = store

    @property
    def enabled(self) -> bool:
        return self._store is not None or self._settings.qdrant_url is not None

    async def similar(self, tenant_id: str, item_id: str, k: int) -> list[tuple[str, float]] | None:
        """Nearest items of the tenant, or None when the models should answer instead."""
        if not self.enabled:
            return None
        if self._store is None:
            self._store = create_vector_store(self._settings)
        for collection in COLLECTIONS:
            try:
                hits = await self._store.similar_to(collection, item_id, k, tenant_id)
            except NotFound:  # no such collection, or the item has no vector in it
                continue
            except StorageError as error:
                logger.warning("vector search failed, models answer instead: %s", error)
                return None
            if hits:
                return [(hit.id, float(hit.score)) for hit in hits]
        return None

    async def content_candidates(
        self,
        tenant_id: str,
        history: Sequence[str],
        k: int,
        *,
        exclude: Sequence[str] = (),
        categories: Sequence[str] | None = None,
    ) -> list[tuple[str, float]] | None:
        """The content engine's answer from the vector store: items nearest to the mean of the
        user's recent items' content vectors. None when there is no store or no profile."""
        if not self.enabled or not history:
            return None
        if self._store is None:
            self._store = create_vector_store(self._settings)
        try:
            profile = await self._profile(tenant_id, history[:PROFILE_ITEMS])
            if profile is None:
                return None
            hits = await self._store.search(
                CONTENT,
                profile,
                k,
                tenant_id,
                {"category": list(categories)} if categories else None,
                exclude_ids=[*history, *exclude],
            )
        except StorageError as error:
            logger.warning("content candidates from the model instead: %s", error)
            return None
        return [(hit.id, float(hit.score)) for hit in hits] or None

    async def _profile(self, tenant_id: str, items: Sequence[str]) -> list[float] | None:
        assert self._store is not None
        vectors = []
        for item in items:
            try:
                vector = np.asarray(await self._store.get_vector(CONTENT, item, tenant_id))
            except NotFound:
                continue
            vectors.append(vector / (np.linalg.norm(vector) or 1.0))
        return np.mean(vectors, axis=0).tolist() if vectors else None
