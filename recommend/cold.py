"""The cold source: what the recommendation step serves when no engine of the tenant is trained,
and the exploration slots for items newer than the last training.

Design: ``recommend.step.RecommendationStep`` is the only place that decides what a request
gets; it holds one ``ColdSource`` and asks it only where trained engines have nothing to say
(no model yet, or an empty answer), so there is still one implementation of the step. The cold
source reads the database and the vector store itself, from ``Settings``, instead of being fed
by its caller: the combiner (Serve path) and ``InProcessService`` both have Settings and
build it the same way, so both paths serve the same cold answers and the ingress stays a thin
HTTP edge. Its sources, in the order a request's list is blended from:

- ``cold:content``: items nearest (hashed content vectors, ``recommend.vector_similar.TEXT``)
  to the mean vector of the user's recent items: every item write puts the vector there at once;
- ``cold:popular-db``: the items most interacted with among the tenant's latest
  ``cold_window_interactions`` within ``cold_window_days`` (one bounded query), then the newest
  items (recency, so a catalogue without interactions still answers); cached for
  ``cold_cache_seconds`` per tenant in the Cache (Redis when configured, shared by replicas) and
  dropped when an item of the tenant changes.

Exploration: while a tenant has items written since its last training (``fresh_items_key`` set
by item writes, deleted by training), a share of each list (``exploration_share``, at least one
slot when positive) goes to the fresh items nearest to the user's history (or to the item, for
similar items), so new items get the interactions that train them in.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from recommend.scoring import make_filter
from recommend.types import ItemContent, RecommendationRequest
from recommend.vector_similar import VectorSimilar
from storage import repositories as repo
from storage.cache import Cache, create_cache
from storage.cache.base import tenant_key
from storage.cache.keys import fresh_items_key
from storage.db import Database
from storage.errors import StorageError
from storage.settings import Settings

logger = logging.getLogger(__name__)

Pairs = list[tuple[str, float]]
POPULAR = "cold:popular-db"
CONTENT = "cold:content"
EXPLORE = "explore:new-items"
# How many popular and newest items a tenant's cold list keeps (filters apply after the cache).
POPULAR_LIMIT = 200
# The fresh-items mark outlives any sensible retraining interval; training deletes it anyway.
FRESH_TTL_SECONDS = 30 * 24 * 3600.0


def exploration_slots(k: int, share: float) -> int:
    """Slots of a ``k`` list for new items: ``ceil(k * share)``, 0 when the share is 0."""
    if share <= 0 or k <= 1:
        return 0
    return min(k - 1, math.ceil(k * share))


class ColdSource:
    def __init__(
        self,
        settings: Settings,
        vectors: VectorSimilar,
        *,
        database: Database | None = None,
        cache: Cache | None = None,
    ) -> None:
        self._settings = settings
        self.vectors = vectors
        self._database = database
        self._cache = cache

    @property
    def exploration_share(self) -> float:
        return self._settings.exploration_share

    def _db(self) -> Database:
        if self._database is None:
            self._database = Database.from_settings(self._settings)
        return self._database

    def _kv(self) -> Cache:
        if self._cache is None:
            self._cache = create_cache(self._settings)
        return self._cache

    # ---- recommendations ---------------------------------------------------------------------
    async def recommend(self, request: RecommendationRequest, k: int) -> dict[str, Pairs]:
        """Source name -> candidates for a tenant (or user) no trained engine answers."""
        history = list(request.history or ())
        answered: dict[str, Pairs] = {}
        content = await self.vectors.text_candidates(
            request.tenant_id,
            history,
            k,
            exclude=request.exclude_item_ids,
            categories=request.categories,
            exclude_categories=request.exclude_categories,
        )
        if content:
            answered[CONTENT] = content
        skip = {*history, *request.exclude_item_ids}
        ranked = [entry for entry in await self._popular(request.tenant_id) if entry[0] not in skip]
        by_category = make_filter(
            request.categories or None, exclude_categories=request.exclude_categories
        )
        wanted = by_category.category_mask([c for _, _, c in ranked]) if by_category else None
        popular = [
            (item, score)
            for position, (item, score, _) in enumerate(ranked)
            if wanted is None or wanted[position]
        ]
        if popular:
            answered[POPULAR] = popular[:k]
        return answered

    async def trending(self, tenant_id: str, category: str | None, limit: int) -> Pairs:
        """Recent counts from the database (then the newest items) for an untrained tenant."""
        ranked = await self._popular(tenant_id)
        return [(i, s) for i, s, c in ranked if category is None or c == category][:limit]

    async def similar(self, tenant_id: str, item_id: str, k: int) -> Pairs:
        return await self.vectors.text_similar(tenant_id, item_id, k) or []

    async def _popular(self, tenant_id: str) -> list[tuple[str, float, str | None]]:
        key = tenant_key(tenant_id, "cold", "popular")
        ttl = self._settings.cold_cache_seconds
        try:
            cached = await self._kv().get(key) if ttl > 0 else None
        except StorageError as error:
            logger.warning("cold list cache unavailable: %s", error)
            cached = None
        if cached is not None:
            return [(str(i), float(s), c) for i, s, c in cached]
        try:
            ranked = await self._read_popular(uuid.UUID(tenant_id))
        except (StorageError, ValueError) as error:
            logger.warning("cold list of tenant %s unavailable: %s", tenant_id, error)
            return []
        if ttl > 0:
            try:
                await self._kv().set(key, [list(entry) for entry in ranked], ttl=ttl)
            except StorageError as error:
                logger.warning("cold list not cached: %s", error)
        return ranked

    async def _read_popular(self, tenant: uuid.UUID) -> list[tuple[str, float, str | None]]:
        """Counted items first (scores in (1, 2]), then the newest items (scores in (0, 1])."""
        since = datetime.now(UTC) - timedelta(days=self._settings.cold_window_days)
        async with self._db().session() as session:
            counts = await repo.popular_items(
                session=session,
                tenant_id=tenant,
                since=since,
                window=self._settings.cold_window_interactions,
                limit=POPULAR_LIMIT,
            )
            rows = await repo.items_by_ids(
                session=session, tenant_id=tenant, item_ids=[i for i, _ in counts]
            )
            newest = await repo.newest_items(session=session, tenant_id=tenant, limit=POPULAR_LIMIT)
        top = max((n for _, n in counts), default=1)
        ranked: list[tuple[str, float, str | None]] = [
            (str(row.id), 1.0 + n / top, row.category)
            for (_, n), row in zip(counts, rows, strict=True)
            if row is not None  # deleted since
        ]
        listed = {item for item, _, _ in ranked}
        fill = [row for row in newest if str(row.id) not in listed]
        ranked += [(str(row.id), 1.0 / (1 + rank), row.category) for rank, row in enumerate(fill)]
        return ranked[:POPULAR_LIMIT]

    # ---- exploration -----------------------------------------------------------------------
    async def has_fresh(self, tenant_id: str) -> bool:
        if self.exploration_share <= 0 or not self.vectors.text_enabled:
            return False
        try:
            return bool(await self._kv().get(fresh_items_key(tenant_id)))
        except StorageError:
            return False

    async def fresh_for_user(
        self, request: RecommendationRequest, slots: int, listed: Sequence[str]
    ) -> Pairs:
        """Up to ``slots`` fresh items nearest to the user's history, none already listed."""
        found = await self.vectors.text_candidates(
            request.tenant_id,
            list(request.history or ()),
            slots,
            exclude=[*request.exclude_item_ids, *listed],
            categories=request.categories,
            exclude_categories=request.exclude_categories,
            fresh_only=True,
        )
        return list(found or [])[:slots]

    async def fresh_near_item(
        self, tenant_id: str, item_id: str, slots: int, listed: Sequence[str]
    ) -> Pairs:
        found = await self.vectors.text_similar(
            tenant_id, item_id, slots + len(listed), fresh_only=True
        )
        return [(i, s) for i, s in found or () if i not in listed][:slots]

    # ---- item writes -----------------------------------------------------------------------
    async def items_changed(self, tenant_id: str, items: list[ItemContent]) -> None:
        """Write the items' content vectors; mark the tenant as having fresh items; drop its
        cached cold list (it may now miss or mislabel these items)."""
        written = await self.vectors.write_items(tenant_id, items)
        try:
            if written:
                await self._kv().set(fresh_items_key(tenant_id), 1, ttl=FRESH_TTL_SECONDS)
            await self._kv().delete(tenant_key(tenant_id, "cold", "popular"))
        except StorageError as error:
            logger.warning("cold state of tenant %s not updated: %s", tenant_id, error)

    async def items_deleted(self, tenant_id: str, item_ids: list[str]) -> None:
        await self.vectors.delete_items(tenant_id, item_ids)
        try:
            await self._kv().delete(tenant_key(tenant_id, "cold", "popular"))
        except StorageError as error:
            logger.warning("cold list of tenant %s not dropped: %s", tenant_id, error)
