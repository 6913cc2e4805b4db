"""Similar items answered by the vector store, where every replica can reach it.

Training upserts ALS item factors (``items_als``) and content vectors (``items_content``) per
tenant. Similar items come from a nearest-neighbour search there, so a catalogue far larger than
a replica's models still answers fast: on a Qdrant server (``RECSERVE_QDRANT_URL``), or in the
embedded store given as ``store`` (the Serve app's ``vectors`` replica holds it, reached through
``deployments.vector_store.RemoteVectorStore``). Without either the trained models answer, as
they also do when the search finds nothing.

The hashed content vectors (``TEXT``, ``training.algorithms.content.hashed_vectors``) need no
trained model: every item write puts its vector there (payload ``stage`` "new": newer than the last
training, which rewrites them ``trained``), so cold tenants and new items have content
neighbours at once. They are kept wherever a store is reachable: the Qdrant server, or (``local``,
the single-process server) the embedded store this process holds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from recommend.types import ItemContent
from storage.errors import NotFound, StorageError
from storage.settings import Settings
from storage.vectors import NoneOf, VectorStore, create_vector_store
from training.algorithms import ALGORITHMS, similarity_engines
from training.algorithms.content import TEXT_COLLECTION, TEXT_DIMS, hashed_vectors
from training.data import ItemInfo

logger = logging.getLogger(__name__)

# In the engines' similarity order (collaborative neighbours first: they reflect behaviour;
# content vectors cover cold items).
COLLECTIONS = tuple(
    collection
    for name in similarity_engines()
    if (collection := ALGORITHMS[name].vector_collection) is not None
)
# The collection of the engines whose user profile is a mean of item vectors (content).
CONTENT = next(
    cls.vector_collection
    for cls in ALGORITHMS.values()
    if cls.candidates_from_vectors and cls.vector_collection
)
TEXT = TEXT_COLLECTION
# The most recent items that make up a user's content profile.
PROFILE_ITEMS = 20
# Payload mark of items written since the tenant's last training (exploration candidates):
# ``stage`` is "new" until training rewrites it "trained" (a keyword: every backend matches it).
STAGE, NEW, TRAINED = "stage", "new", "trained"

Pairs = list[tuple[str, float]]


def category_matches(
    categories: Sequence[str] | None, exclude_categories: Sequence[str]
) -> dict[str, Any] | None:
    """The payload filter for a request's wanted and excluded categories (one key, so the
    wanted ones lose the excluded); None when no category is left to match."""
    if categories:
        kept = [c for c in categories if c not in exclude_categories]
        return {"category": kept} if kept else None
    return {"category": NoneOf(tuple(exclude_categories))} if exclude_categories else {}


class VectorSimilar:
    def __init__(
        self, settings: Settings, store: VectorStore | None = None, *, local: bool = False
    ) -> None:
        self._settings = settings
        self._store = store
        self._owned = store is None  # opened here on first use, so closed here
        self._local = local

    @property
    def enabled(self) -> bool:
        """Trained engines' candidates and neighbours come from the store: a Qdrant server,
        or a store given for that. Not from the embedded store (``local``): there the models
        answer, in the single-process server and in the Serve app alike."""
        if self._settings.qdrant_url is not None:
            return True
        return self._store is not None and not self._local

    @property
    def text_enabled(self) -> bool:
        """Hashed content vectors are kept: a server, a given store, or the embedded one."""
        return self._local or self.enabled

    async def close(self) -> None:
        """Release the store this object opened itself (a store it was given stays open)."""
        if self._store is not None and self._owned:
            store, self._store = self._store, None
            await store.close()

    def _opened(self) -> VectorStore:
        if self._store is None:
            self._store = create_vector_store(self._settings)
        return self._store

    async def write_items(self, tenant_id: str, items: Sequence[ItemContent]) -> bool:
        """Upsert the items' hashed content vectors, marked fresh; an item without any words
        or category loses its point. False (logged) when the store failed or is absent."""
        if not self.text_enabled or not items:
            return False
        infos = [
            ItemInfo(i.item_id, i.title, i.description, i.category, tuple(i.tags)) for i in items
        ]
        matrix = hashed_vectors(infos)
        points = [
            (i.item_id, row.tolist(), {"tenant_id": tenant_id, "category": i.category, STAGE: NEW})
            for i, row in zip(items, matrix, strict=True)
            if np.any(row)
        ]
        blank = [i.item_id for i, row in zip(items, matrix, strict=True) if not np.any(row)]
        try:
            store = self._opened()
            await store.ensure_collection(TEXT, TEXT_DIMS)
            if points:
                await store.upsert(TEXT, points)
            if blank:
                await store.delete(TEXT, blank)
        except StorageError as error:
            logger.warning("content vectors of %d items not written: %s", len(items), error)
            return False
        return True

    async def delete_items(self, tenant_id: str, item_ids: Sequence[str]) -> None:
        """Points of deleted items go, so nothing recommends or lists them as similar."""
        if not self.text_enabled or not item_ids:
            return
        try:
            await self._opened().delete(TEXT, item_ids)
        except NotFound:  # no collection yet: nothing to delete
            return
        except StorageError as error:
            logger.warning("content vectors of deleted items kept: %s", error)

    async def text_similar(
        self, tenant_id: str, item_id: str, k: int, *, fresh_only: bool = False
    ) -> Pairs | None:
        """Nearest items by hashed content; None when there is no store or no vector."""
        if not self.text_enabled:
            return None
        try:
            hits = await self._opened().similar_to(
                TEXT, item_id, k, tenant_id, {STAGE: NEW} if fresh_only else None
            )
        except NotFound:
            return None
        except StorageError as error:
            logger.warning("content neighbours unavailable: %s", error)
            return None
        return [(hit.id, float(hit.score)) for hit in hits if hit.score > 0] or None

    async def text_candidates(
        self,
        tenant_id: str,
        history: Sequence[str],
        k: int,
        *,
        exclude: Sequence[str] = (),
        categories: Sequence[str] | None = None,
        exclude_categories: Sequence[str] = (),
        fresh_only: bool = False,
    ) -> Pairs | None:
        """Items nearest to the mean hashed content vector of the user's recent items."""
        matches = category_matches(categories, exclude_categories)
        if not self.text_enabled or not history or matches is None:
            return None
        if fresh_only:
            matches[STAGE] = NEW
        found = await self._nearest(TEXT, tenant_id, history, k, exclude, matches or None)
        # Nothing in common (score 0 or less) is no reason to recommend an item.
        return [(item, score) for item, score in found or () if score > 0] or None

    async def similar(self, tenant_id: str, item_id: str, k: int) -> list[tuple[str, float]] | None:
        """Nearest items of the tenant, or None when the models should answer instead."""
        if not self.enabled:
            return None
        store = self._opened()
        for collection in COLLECTIONS:
            try:
                hits = await store.similar_to(collection, item_id, k, tenant_id)
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
        exclude_categories: Sequence[str] = (),
    ) -> list[tuple[str, float]] | None:
        """The content engine's answer from the vector store: items nearest to the mean of the
        user's recent items' content vectors. None when there is no store or no profile."""
        matches = category_matches(categories, exclude_categories)
        if not self.enabled or not history or matches is None:
            return None
        return await self._nearest(CONTENT, tenant_id, history, k, exclude, matches or None)

    async def _nearest(
        self,
        collection: str,
        tenant_id: str,
        history: Sequence[str],
        k: int,
        exclude: Sequence[str],
        matches: dict[str, Any] | None,
    ) -> Pairs | None:
        try:
            store = self._opened()
            profile = await self._profile(collection, tenant_id, history[:PROFILE_ITEMS])
            if profile is None:
                return None
            hits = await store.search(
                collection, profile, k, tenant_id, matches, exclude_ids=[*history, *exclude]
            )
        except NotFound:  # no such collection yet
            return None
        except StorageError as error:
            logger.warning("content candidates from the model instead: %s", error)
            return None
        return [(hit.id, float(hit.score)) for hit in hits] or None

    async def _profile(
        self, collection: str, tenant_id: str, items: Sequence[str]
    ) -> list[float] | None:
        assert self._store is not None
        found = await self._store.get_vectors(collection, list(items), tenant_id)
        vectors = [np.asarray(v) / (np.linalg.norm(v) or 1.0) for v in found.values()]
        return np.mean(vectors, axis=0).tolist() if vectors else None
