"""Per-request DataLoaders, each scoped to one tenant: one SQL statement per batch.

A request that lists 50 users with their interactions, ratings and tenant (or 50 items with
their interactions and popularity) costs the same number of statements as one that lists 5.
Every statement filters on the tenant from the verified token, so a key of another tenant
simply loads as missing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

from strawberry.dataloader import DataLoader

from graph_api.row_cache import RowCache
from storage import repositories as repo
from storage.errors import NotFound
from storage.feedback_rules import FeedbackRules
from storage.models import Interaction, Item, Rating, Tenant, User
from storage.rating_scale import RatingScale

K = TypeVar("K")
V = TypeVar("V")
# (user or item, interaction type or None, how many at most)
InteractionKey = tuple[uuid.UUID, str | None, int]
RatingKey = tuple[uuid.UUID, int]  # (user, how many at most)


class Loaders:
    def __init__(self, database: Any, tenant_id: uuid.UUID, rows: RowCache | None = None) -> None:
        self._database = database
        self.tenant_id = tenant_id
        self._rows = rows
        self.users: DataLoader[uuid.UUID, User | None] = DataLoader(self._users)
        self.tenants: DataLoader[uuid.UUID, Tenant | None] = DataLoader(self._tenants)
        self.items: DataLoader[uuid.UUID, Item | None] = DataLoader(self._items)
        self.interactions: DataLoader[InteractionKey, list[Interaction]] = DataLoader(
            self._interactions
        )
        self.ratings: DataLoader[RatingKey, list[Rating]] = DataLoader(self._ratings)
        self.average_rating: DataLoader[uuid.UUID, float | None] = DataLoader(self._average_ratings)
        # The design's ItemInteractions and PopularItems loaders: per item, its newest
        # interactions, and its interaction and distinct-user counts.
        self.item_interactions: DataLoader[InteractionKey, list[Interaction]] = DataLoader(
            self._item_interactions
        )
        self.item_popularity: DataLoader[uuid.UUID, repo.ItemPopularity] = DataLoader(
            self._item_popularity
        )

    async def _users(self, ids: list[uuid.UUID]) -> list[User | None]:
        if self._rows is not None:
            return await self._rows.load("user", ids, self._users_from_database)
        return await self._users_from_database(ids)

    async def _users_from_database(self, ids: list[uuid.UUID]) -> list[User | None]:
        return await self._database.read(
            lambda session: repo.users_by_ids(
                session=session, tenant_id=self.tenant_id, user_ids=ids
            )
        )

    async def _items(self, ids: list[uuid.UUID]) -> list[Item | None]:
        if self._rows is not None:
            return await self._rows.load("item", ids, self._items_from_database)
        return await self._items_from_database(ids)

    async def _items_from_database(self, ids: list[uuid.UUID]) -> list[Item | None]:
        # Soft-deleted items load as None, like missing ones.
        return await self._database.read(
            lambda session: repo.items_by_ids(
                session=session, tenant_id=self.tenant_id, item_ids=ids
            )
        )

    async def _tenants(self, ids: list[uuid.UUID]) -> list[Tenant | None]:
        # Only the caller's own tenant is ever visible, whatever id is asked for.
        try:
            own = await self._database.read(
                lambda session: repo.get_tenant(session=session, tenant_id=self.tenant_id)
            )
        except NotFound:
            own = None
        return [own if key == self.tenant_id else None for key in ids]

    async def _interactions(self, keys: list[InteractionKey]) -> list[list[Interaction]]:
        return await self._newest_interactions("user", keys)

    async def _item_interactions(self, keys: list[InteractionKey]) -> list[list[Interaction]]:
        return await self._newest_interactions("item", keys)

    async def _newest_interactions(
        self, owner: Literal["user", "item"], keys: list[InteractionKey]
    ) -> list[list[Interaction]]:
        """``keys`` are (owner id, type or None, limit), the owner a user or an item."""
        owners = list(dict.fromkeys(owner for owner, _, _ in keys))
        types = {kind for _, kind, _ in keys}
        # One type asked for (the common case) is filtered in SQL; a mix is one statement that
        # keeps each owner's and each type's newest rows, filtered here: a batch is always one
        # statement, cut in SQL to the largest limit asked for.
        sql_type = next(iter(types)) if len(types) == 1 else None
        lists = await self._database.read(
            lambda session: repo.interactions_for(
                session=session,
                tenant_id=self.tenant_id,
                owner=owner,
                ids=owners,
                interaction_type=sql_type,
                per_owner=max(limit for _, _, limit in keys),
            )
        )
        by_owner = dict(zip(owners, lists, strict=True))
        return [
            [row for row in by_owner[owner] if kind is None or row.interaction_type == kind][:limit]
            for owner, kind, limit in keys
        ]

    async def _ratings(self, keys: list[RatingKey]) -> list[list[Rating]]:
        user_ids = list(dict.fromkeys(user_id for user_id, _ in keys))
        lists = await self._database.read(
            lambda session: repo.ratings_for_users(
                session=session,
                tenant_id=self.tenant_id,
                user_ids=user_ids,
                per_user=max(limit for _, limit in keys),
            )
        )
        by_user = dict(zip(user_ids, lists, strict=True))
        return [by_user[user_id][:limit] for user_id, limit in keys]

    async def rating_scale(self) -> RatingScale:
        """The tenant's rating scale: ratings are shown, and given, on it."""
        tenant = await self.tenants.load(self.tenant_id)
        return RatingScale.of_tenant(tenant.settings if tenant is not None else None)

    async def feedback_rules(self) -> FeedbackRules:
        """Which of the tenant's interactions count as clicks and conversions."""
        tenant = await self.tenants.load(self.tenant_id)
        return FeedbackRules.of_tenant(tenant.settings if tenant is not None else None)

    async def _average_ratings(self, item_ids: list[uuid.UUID]) -> list[float | None]:
        """Each item's average rating, on the tenant's scale."""
        stats = await self._database.read(
            lambda session: repo.average_ratings(
                session=session, tenant_id=self.tenant_id, item_ids=item_ids
            )
        )
        scale = await self.rating_scale()
        return [None if e.average is None else scale.shown(e.average) for e in stats]

    async def _item_popularity(self, item_ids: list[uuid.UUID]) -> list[repo.ItemPopularity]:
        return await self._database.read(
            lambda session: repo.item_popularity(
                session=session, tenant_id=self.tenant_id, item_ids=item_ids
            )
        )


def prime(loader: DataLoader[K, V], rows: Sequence[Any], key: Callable[[Any], K]) -> None:
    """Seed a loader with rows a list query already fetched, so nested fields do not refetch."""
    for row in rows:
        loader.prime(key(row), row)
