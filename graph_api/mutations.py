"""Data mutations. Each write is committed before the reply (the session commits on exit).

After an interaction or a rating the user's cached recommendations are dropped and an event is
published on the tenant's channel, which subscriptions and fold-in listeners consume.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import strawberry

from graph_api import bounds
from graph_api.account_mutations import AccountAdminMutation
from graph_api.auth import Principal
from graph_api.auth_mutations import AuthMutation
from graph_api.context import Info, RequestContext
from graph_api.errors import BadUserInput, ObjectNotFound
from graph_api.experiments import ExperimentMutation
from graph_api.inputs import (
    InteractionImportInput,
    InteractionInput,
    ItemInput,
    ItemUpdateInput,
    RatingInput,
    check_rating,
    item_fields,
)
from graph_api.online import FeedbackMutation, checked_recommendation_id, feedback_rules
from graph_api.preferences import Preferences, PreferencesInput, updated
from graph_api.queries import require_admin
from graph_api.quotas import TRAINING_RUNS
from graph_api.recommendations import tenant_cache_prefix, user_cache_prefix
from graph_api.row_cache import row_key, row_prefix
from graph_api.tenant_admin import TenantAdminMutation
from graph_api.training import TrainingMutation
from graph_api.types import Interaction, Item, Rating, TrainingJob, User
from recommend.types import ItemContent
from storage.cache.channels import events_channel, items_channel
from storage.errors import InvalidData, Unavailable
from storage.rating_scale import STAR_SCALE
from storage.repositories import interaction_import
from storage.repositories import interactions as interactions_repo
from storage.repositories import items as items_repo
from storage.repositories import ratings as ratings_repo
from storage.repositories import users as users_repo

INTERACTION_TYPES = frozenset(
    {"view", "click", "like", "dislike", "purchase", "add_to_cart", "share", "bookmark"}
)
# Beyond this many users in one import, the tenant's cached results are dropped at once
# rather than user by user (one prefix delete instead of thousands).
USER_DROPS = 100
FUTURE_SLACK = timedelta(minutes=5)  # clocks differ; an event much later than now is a mistake
LEGACY_RATING = "Use rateItem(input: {itemId, rating})."
ITEM_CREATED, ITEM_UPDATED, ITEM_DELETED = "created", "updated", "deleted"
logger = logging.getLogger(__name__)


async def _stored_rating(ctx: RequestContext, rating: float) -> float:
    """A rating on the tenant's scale as stored: stars in steps of 0.5 (the default), or any
    value of the tenant's own scale, mapped onto the stored range."""
    scale = await ctx.loaders.rating_scale()
    if scale == STAR_SCALE:
        return check_rating(rating)
    bounds.check_number("rating", rating)
    try:
        return scale.stored(rating)
    except InvalidData as error:
        raise BadUserInput(f"{error}.") from None


async def _after_user_write(
    ctx: RequestContext, principal: Principal, event: dict[str, Any]
) -> None:
    prefix = user_cache_prefix(principal.tenant_id, principal.user_id)
    await ctx.services.results.drop_prefix(prefix)
    try:
        await ctx.services.cache.publish(events_channel(principal.tenant_id), event)
    except Unavailable as error:  # the write is committed; live listeners miss this one event
        logger.warning("event not published, cache unavailable: %s", error)


async def _after_preferences_change(ctx: RequestContext, principal: Principal) -> None:
    """The user's cached lists were filtered by the old preferences, and the recommendation
    step reads them from the user's cached row: both go now, not at their TTL."""
    await ctx.services.results.drop_prefix(
        user_cache_prefix(principal.tenant_id, principal.user_id)
    )
    try:
        await ctx.services.cache.delete(row_key(principal.tenant_id, "user", principal.user_id))
    except Unavailable as error:  # the row cache is skipped while the cache is down anyway
        logger.warning("user row not dropped, cache unavailable: %s", error)


async def _after_item_change(
    ctx: RequestContext,
    principal: Principal,
    changes: Sequence[tuple[str, uuid.UUID]] = (),
) -> None:
    """Items changed: every cached result of the tenant may show or rank them wrongly, and the
    cached item rows may be stale; then each ``(change, item id)`` is announced on the tenant's
    items channel (after the drops, so a listener reads fresh rows and lists)."""
    await ctx.services.results.drop_prefix(tenant_cache_prefix(principal.tenant_id))
    await ctx.services.results.drop_prefix(row_prefix(principal.tenant_id, "item"))
    at = datetime.now(UTC).isoformat()
    try:
        for change, item_id in changes:
            event = {"kind": "item", "change": change, "item_id": str(item_id), "at": at}
            await ctx.services.cache.publish(items_channel(principal.tenant_id), event)
    except Unavailable as error:  # the items are committed; live listeners miss these events
        logger.warning("item events not published, cache unavailable: %s", error)


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
class ImportRowError:
    index: int = strawberry.field(description="0-based position of the row in the input.")
    message: str


@strawberry.type
class InteractionImportResult:
    imported: int = strawberry.field(description="Rows written.")
    duplicates: int = strawberry.field(
        description="Good rows not written because the tenant already had that event."
    )
    errors: list[ImportRowError] = strawberry.field(
        description="The rows refused, and why; nothing of them was stored."
    )


def _interaction_row_error(entry: InteractionImportInput, now: datetime) -> str | None:
    """Why one imported row is refused (its own values only), or None."""
    if entry.interaction_type not in INTERACTION_TYPES:
        return f"interactionType must be one of: {', '.join(sorted(INTERACTION_TYPES))}."
    value = entry.interaction_value
    if value is not None and not math.isfinite(value):
        return "interactionValue must be a finite number."
    if _utc(entry.occurred_at) > now + FUTURE_SLACK:
        return "occurredAt must not be in the future."
    return None


def _rating_input(
    input: RatingInput | None, item_id: uuid.UUID | None, rating: float | None
) -> RatingInput:
    """rateItem's one form: the input object, or the deprecated (itemId, rating) pair."""
    legacy = item_id is not None or rating is not None
    if input is not None and legacy:
        raise BadUserInput("Pass either input or itemId and rating, not both.")
    if input is not None:
        return input
    if item_id is None or rating is None:
        raise BadUserInput("rateItem needs input (or the deprecated itemId and rating).")
    return RatingInput(item_id=item_id, rating=rating)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


async def _unknown_ids(
    ctx: RequestContext, tenant_id: uuid.UUID, rows: list[InteractionImportInput]
) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
    """The user ids and item ids of ``rows`` that are not the tenant's (active items only,
    as for recordInteraction)."""
    user_ids = list({row.user_id for row in rows})
    item_ids = list({row.item_id for row in rows})
    async with ctx.session() as session:
        users = await users_repo.users_by_ids(
            session=session, tenant_id=tenant_id, user_ids=user_ids
        )
        items = await items_repo.items_by_ids(
            session=session, tenant_id=tenant_id, item_ids=item_ids
        )
    return (
        {key for key, row in zip(user_ids, users, strict=True) if row is None},
        {key for key, row in zip(item_ids, items, strict=True) if row is None},
    )


async def _after_import(
    ctx: RequestContext, tenant_id: uuid.UUID, written: list[dict[str, Any]]
) -> None:
    """What recordInteraction does after a write, for every written row: drop the users'
    cached results and publish one event each."""
    users = {row["user_id"] for row in written}
    if len(users) > USER_DROPS:
        await ctx.services.results.drop_prefix(tenant_cache_prefix(tenant_id))
    else:
        for user_id in users:
            await ctx.services.results.drop_prefix(user_cache_prefix(tenant_id, user_id))
    channel = events_channel(tenant_id)
    try:
        for row in written:
            event = {
                "kind": "interaction",
                "user_id": str(row["user_id"]),
                "item_id": str(row["item_id"]),
                "interaction_type": row["interaction_type"],
                "value": float(row["value"]),
                "at": row["created_at"].isoformat(),
            }
            await ctx.services.cache.publish(channel, event)
    except Unavailable as error:  # the rows are committed; live listeners miss these events
        logger.warning("import events not published, cache unavailable: %s", error)


@strawberry.type
class Mutation(
    AuthMutation,
    AccountAdminMutation,
    TrainingMutation,
    FeedbackMutation,
    ExperimentMutation,
    TenantAdminMutation,
):
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
        named = None
        if input.recommendation_id is not None:
            named = await checked_recommendation_id(
                info.context, principal, input.recommendation_id, input.item_id
            )
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
        feedback = info.context.services.feedback
        if feedback is not None:
            feedback.interacted(
                rules=await feedback_rules(info.context, principal),
                interaction_id=row.id,
                tenant_id=principal.tenant_id,
                user_id=principal.user_id,
                item_id=row.item_id,
                interaction_type=row.interaction_type,
                value=float(row.value),
                at=row.created_at,
                recommendation_id=named,
            )
        return Interaction.from_row(row)

    @strawberry.mutation(
        description="Set the caller's rating of an item: pass input (itemId and rating are "
        "the deprecated form). Exactly one form."
    )
    async def rate_item(
        self,
        info: Info,
        input: RatingInput | None = None,
        item_id: Annotated[
            uuid.UUID | None, strawberry.argument(deprecation_reason=LEGACY_RATING)
        ] = None,
        rating: Annotated[
            float | None, strawberry.argument(deprecation_reason=LEGACY_RATING)
        ] = None,
    ) -> Rating:
        principal = await info.context.authorize()
        entry = _rating_input(input, item_id, rating)
        value = await _stored_rating(info.context, entry.rating)
        rated_at = _utc(entry.rated_at) if entry.rated_at is not None else datetime.now(UTC)
        if rated_at > datetime.now(UTC) + FUTURE_SLACK:
            raise BadUserInput("ratedAt must not be in the future.")
        if await info.context.loaders.items.load(entry.item_id) is None:
            raise ObjectNotFound("Item not found.")
        async with info.context.session() as session:
            row = await ratings_repo.rate_item(
                session=session,
                tenant_id=principal.tenant_id,
                user_id=principal.user_id,
                item_id=entry.item_id,
                rating=value,
                rated_at=rated_at,
            )
        event = {
            "kind": "rating",
            "user_id": str(principal.user_id),
            "item_id": str(entry.item_id),
            "value": value,
            "at": rated_at.isoformat(),
        }
        await _after_user_write(info.context, principal, event)
        return Rating.from_row(row)

    @strawberry.mutation(
        description="Change the caller's preferences; the next recommendations follow them."
    )
    async def update_preferences(self, info: Info, input: PreferencesInput) -> User:
        principal = await info.context.authorize()
        async with info.context.session() as session:
            row = await users_repo.get_user(
                session=session, tenant_id=principal.tenant_id, user_id=principal.user_id
            )
            preferences = updated(Preferences.from_stored(row.preferences), input)
            row = await users_repo.set_preferences(
                session=session,
                tenant_id=principal.tenant_id,
                user_id=principal.user_id,
                preferences=preferences.stored(),
            )
        await _after_preferences_change(info.context, principal)
        return User.from_row(row)

    @strawberry.mutation
    async def create_item(self, info: Info, input: ItemInput) -> Item:
        principal = await require_admin(info.context)
        fields = item_fields(input)
        if "title" not in fields:
            raise BadUserInput("title is required.")
        external_id = input.external_id or uuid.uuid4().hex
        async with info.context.session() as session:
            await info.context.services.quotas.check_items(session, principal, [external_id])
            row = await items_repo.create_item(
                session=session,
                tenant_id=principal.tenant_id,
                external_id=external_id,
                **fields,
            )
        await _write_content(info.context, principal, [row])
        await _after_item_change(info.context, principal, [(ITEM_CREATED, row.id)])
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
        await _after_item_change(info.context, principal, [(ITEM_UPDATED, row.id)])
        return Item.from_row(row)

    @strawberry.mutation
    async def delete_item(self, info: Info, id: uuid.UUID) -> bool:
        principal = await require_admin(info.context)
        async with info.context.session() as session:
            await items_repo.delete_item(session=session, tenant_id=principal.tenant_id, item_id=id)
        await info.context.services.recommender.items_deleted(
            tenant_id=str(principal.tenant_id), item_ids=[str(id)]
        )
        await _after_item_change(info.context, principal, [(ITEM_DELETED, id)])
        return True

    @strawberry.mutation
    async def import_items(self, info: Info, items: list[ItemInput]) -> ImportResult:
        principal = await require_admin(info.context)
        if not 1 <= len(items) <= bounds.IMPORT_ROWS:
            raise BadUserInput(f"importItems takes 1 to {bounds.IMPORT_ROWS} items.")
        rows = []
        for entry in items:
            fields = item_fields(entry)
            if "title" not in fields:
                raise BadUserInput("Every imported item needs a title.")
            rows.append({"external_id": entry.external_id or uuid.uuid4().hex, **fields})
        if len({row["external_id"] for row in rows}) != len(rows):
            raise BadUserInput("externalId values must be unique within one import.")
        async with info.context.session() as session:
            external_ids = [row["external_id"] for row in rows]
            await info.context.services.quotas.check_items(session, principal, external_ids)
            existing = await items_repo.item_ids_by_external_ids(
                session=session, tenant_id=principal.tenant_id, external_ids=external_ids
            )
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
        changes = [
            (ITEM_UPDATED if key in existing else ITEM_CREATED, item_id)
            for key, item_id in ids.items()
        ]
        await _after_item_change(info.context, principal, changes)
        return ImportResult(imported=len(ids), item_ids=[ids[row["external_id"]] for row in rows])

    @strawberry.mutation(
        description="Admin: import past interactions of the tenant's users. Bad rows are "
        "reported in errors and not stored; the good ones are. An event the tenant already "
        "has (same user, item, type and occurredAt) is not stored again."
    )
    async def import_interactions(
        self, info: Info, input: list[InteractionImportInput]
    ) -> InteractionImportResult:
        principal = await require_admin(info.context)
        if not 1 <= len(input) <= bounds.IMPORT_ROWS:
            raise BadUserInput(f"importInteractions takes 1 to {bounds.IMPORT_ROWS} rows.")
        now = datetime.now(UTC)
        errors: dict[int, str] = {}
        for index, entry in enumerate(input):
            reason = _interaction_row_error(entry, now)
            if reason is not None:
                errors[index] = reason
        unknown_users, unknown_items = await _unknown_ids(info.context, principal.tenant_id, input)
        rows = []
        for index, entry in enumerate(input):
            if index in errors:
                continue
            if entry.user_id in unknown_users:
                errors[index] = "User not found."
            elif entry.item_id in unknown_items:
                errors[index] = "Item not found."
            else:
                value = entry.interaction_value
                rows.append(
                    {
                        "user_id": entry.user_id,
                        "item_id": entry.item_id,
                        "interaction_type": entry.interaction_type,
                        "value": 1.0 if value is None else float(value),
                        "created_at": _utc(entry.occurred_at),
                    }
                )
        written: list[dict[str, Any]] = []
        if rows:
            async with info.context.session() as session:
                written = list(
                    await interaction_import.import_interactions(
                        session=session, tenant_id=principal.tenant_id, rows=rows
                    )
                )
            await _after_import(info.context, principal.tenant_id, written)
        return InteractionImportResult(
            imported=len(written),
            duplicates=len(rows) - len(written),
            errors=[ImportRowError(index=i, message=m) for i, m in sorted(errors.items())],
        )

    @strawberry.mutation
    async def train_model(self, info: Info, algorithms: list[str] | None = None) -> TrainingJob:
        principal = await require_admin(info.context)
        bounds.check_list("algorithms", algorithms, bounds.ALGORITHMS)
        unknown = sorted(
            set(algorithms or ()) - set(info.context.services.recommender.catalog.engines)
        )
        if unknown:
            raise BadUserInput(f"Unknown algorithms: {', '.join(unknown)}.")
        quotas = info.context.services.quotas
        await quotas.charge(principal, TRAINING_RUNS)
        try:
            job = await info.context.services.recommender.train(
                tenant_id=str(principal.tenant_id), algorithms=algorithms
            )
        except Exception:
            await quotas.refund(principal, TRAINING_RUNS)  # nothing was started
            raise
        await _after_item_change(info.context, principal)
        return TrainingJob.from_job(job)
