"""Data mutations. Each write is committed before the reply (the session commits on exit).

After an interaction or a rating the user's cached recommendations are dropped and an event is
published on the tenant's channel, which subscriptions and fold-in listeners consume.
"""

from __future__ import annotations

import logging
import math
import uuid
from datetime import UTC, datetime
from typing import Any

import strawberry

from graph_api import bounds
from graph_api.account_mutations import AccountAdminMutation
from graph_api.auth import Principal
from graph_api.auth_mutations import AuthMutation
from graph_api.context import Info, RequestContext
from graph_api.errors import BadUserInput, ObjectNotFound
from graph_api.inputs import (
    InteractionInput,
    ItemInput,
    ItemUpdateInput,
    check_rating,
    item_fields,
)
from graph_api.queries import require_admin
from graph_api.recommendations import tenant_cache_prefix, user_cache_prefix
from graph_api.recommender import ItemContent
from graph_api.row_cache import row_prefix
from graph_api.training import TrainingMutation
from graph_api.types import Interaction, Item, Rating, TrainingJob
from storage.cache.base import tenant_key
from storage.errors import Unavailable
from storage.repositories import interactions as interactions_repo
from storage.repositories import items as items_repo
from storage.repositories import ratings as ratings_repo

INTERACTION_TYPES = frozenset(
    {"view", "click", "like", "dislike", "purchase", "add_to_cart", "share", "bookmark"}
)
MAX_IMPORT = 10_000
logger = logging.getLogger(__name__)


def events_channel(tenant_id: uuid.UUID) -> str:
    return tenant_key(tenant_id, "events")


async def _after_user_write(
    ctx: RequestContext, principal: Principal, event: dict[str, Any]
) -> None:
    prefix = user_cache_prefix(principal.tenant_id, principal.user_id)
    await ctx.services.results.drop_prefix(prefix)
    try:
        await ctx.services.cache.publish(events_channel(principal.tenant_id), event)
    except Unavailable as error:  # the write is committed; live listeners miss this one event
        logger.warning("event not published, cache unavailable: %s", error)


async def _after_item_change(ctx: RequestContext, principal: Principal) -> None:
    """An item changed: every cached result of the tenant may show or rank it wrongly, and the
    cached item rows may be stale."""
    await ctx.services.results.drop_prefix(tenant_cache_prefix(principal.tenant_id))
    await ctx.services.results.drop_prefix(row_prefix(principal.tenant_id, "item"))


async def _write_content(ctx: RequestContext, principal: Principal, items: list[Any]) -> None:
    """The items' content vectors, written before the reply (and before cached results are
    dropped), so a request after this one can already recommend them. Rows or ItemContent."""
    content = [
        item
        if isinstance(item, ItemContent)
        else ItemContent(
            item_id=str(item.id),
            title=item.title,
            description=item.description or "",
            category=item.category,
            tags=tuple(item.tags or ()),
        )
        for item in items
    ]
    await ctx.services.recommender.items_changed(tenant_id=str(principal.tenant_id), items=content)


@strawberry.type
class ImportResult:
    imported: int
    item_ids: list[uuid.UUID]


@strawberry.type
class Mutation(AuthMutation, AccountAdminMutation, TrainingMutation):
    @strawberry.mutation
    async def record_interaction(self, info: Info, input: InteractionInput) -> Interaction:
        principal = await info.context.authorize()
        if input.interaction_type not in INTERACTION_TYPES:
            known = ", ".join(sorted(INTERACTION_TYPES))
            raise BadUserInput(f"interactionType must be one of: {known}.")
        value = 1.0 if input.interaction_value is None else input.interaction_value
        if not math.isfinite(value):
            raise BadUserInput("interactionValue must be a finite number.")
        if input.idempotency_key is not None and not 1 <= len(input.idempotency_key) <= 128:
            raise BadUserInput("idempotencyKey must be 1 to 128 characters.")
        if await info.context.loaders.items.load(input.item_id) is None:
            raise ObjectNotFound("Item not found.")
        async with info.context.session() as session:
            row = await interactions_repo.record_interaction(
                session=session,
                tenant_id=principal.tenant_id,
                user_id=principal.user_id,
                item_id=input.item_id,
                interaction_type=input.interaction_type,
                value=value,
                idempotency_key=input.idempotency_key,
            )
        event = {
            "kind": "interaction",
            "user_id": str(principal.user_id),
            "item_id": str(row.item_id),
            "interaction_type": row.interaction_type,
            "value": float(row.value),
            "at": row.created_at.isoformat(),
        }
        await _after_user_write(info.context, principal, event)
        return Interaction.from_row(row)

    @strawberry.mutation
    async def rate_item(self, info: Info, item_id: uuid.UUID, rating: float) -> Rating:
        principal = await info.context.authorize()
        value = check_rating(rating)
        if await info.context.loaders.items.load(item_id) is None:
            raise ObjectNotFound("Item not found.")
        async with info.context.session() as session:
            row = await ratings_repo.rate_item(
                session=session,
                tenant_id=principal.tenant_id,
                user_id=principal.user_id,
                item_id=item_id,
                rating=value,
            )
        event = {
            "kind": "rating",
            "user_id": str(principal.user_id),
            "item_id": str(item_id),
            "value": value,
            "at": datetime.now(UTC).isoformat(),
        }
        await _after_user_write(info.context, principal, event)
        return Rating.from_row(row)

    @strawberry.mutation
    async def create_item(self, info: Info, input: ItemInput) -> Item:
        principal = await require_admin(info.context)
        fields = item_fields(input)
        if "title" not in fields:
            raise BadUserInput("title is required.")
        async with info.context.session() as session:
            row = await items_repo.create_item(
                session=session,
                tenant_id=principal.tenant_id,
                external_id=input.external_id or uuid.uuid4().hex,
                **fields,
            )
        await _write_content(info.context, principal, [row])
        await _after_item_change(info.context, principal)
        return Item.from_row(row)

    @strawberry.mutation
    async def update_item(self, info: Info, id: uuid.UUID, input: ItemUpdateInput) -> Item:
        principal = await require_admin(info.context)
        fields = item_fields(input)
        if not fields:
            raise BadUserInput("Nothing to update.")
        async with info.context.session() as session:
            row = await items_repo.update_item(
                session=session, tenant_id=principal.tenant_id, item_id=id, **fields
            )
        await _write_content(info.context, principal, [row])
        await _after_item_change(info.context, principal)
        return Item.from_row(row)

    @strawberry.mutation
    async def delete_item(self, info: Info, id: uuid.UUID) -> bool:
        principal = await require_admin(info.context)
        async with info.context.session() as session:
            await items_repo.delete_item(session=session, tenant_id=principal.tenant_id, item_id=id)
        await info.context.services.recommender.items_deleted(
            tenant_id=str(principal.tenant_id), item_ids=[str(id)]
        )
        await _after_item_change(info.context, principal)
        return True

    @strawberry.mutation
    async def import_items(self, info: Info, items: list[ItemInput]) -> ImportResult:
        principal = await require_admin(info.context)
        if not 1 <= len(items) <= MAX_IMPORT:
            raise BadUserInput(f"importItems takes 1 to {MAX_IMPORT} items.")
        rows = []
        for entry in items:
            fields = item_fields(entry)
            if "title" not in fields:
                raise BadUserInput("Every imported item needs a title.")
            rows.append({"external_id": entry.external_id or uuid.uuid4().hex, **fields})
        if len({row["external_id"] for row in rows}) != len(rows):
            raise BadUserInput("externalId values must be unique within one import.")
        async with info.context.session() as session:
            ids = await items_repo.bulk_upsert_items(
                session=session, tenant_id=principal.tenant_id, rows=rows
            )
        await _write_content(
            info.context,
            principal,
            [
                ItemContent(
                    item_id=str(ids[row["external_id"]]),
                    title=row["title"],
                    description=row.get("description") or "",
                    category=row.get("category"),
                    tags=tuple(row.get("tags") or ()),
                )
                for row in rows
            ],
        )
        await _after_item_change(info.context, principal)
        return ImportResult(imported=len(ids), item_ids=[ids[row["external_id"]] for row in rows])

    @strawberry.mutation
    async def train_model(self, info: Info, algorithms: list[str] | None = None) -> TrainingJob:
        principal = await require_admin(info.context)
        bounds.check_list("algorithms", algorithms, bounds.ALGORITHMS)
        unknown = sorted(
            set(algorithms or ()) - set(info.context.services.recommender.catalog.engines)
        )
        if unknown:
            raise BadUserInput(f"Unknown algorithms: {', '.join(unknown)}.")
        job = await info.context.services.recommender.train(
            tenant_id=str(principal.tenant_id), algorithms=algorithms
        )
        await _after_item_change(info.context, principal)
        return TrainingJob.from_job(job)
