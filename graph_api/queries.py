"""Query resolvers: thin, tenant taken from the verified principal, errors as ApiError."""

from __future__ import annotations

import uuid

import strawberry

from graph_api import bounds
from graph_api.context import Info, RequestContext, require_admin
from graph_api.errors import BadUserInput, Forbidden, ObjectNotFound, Unauthenticated
from graph_api.experiments import ExperimentQuery
from graph_api.inputs import MAX_PAGE, RecommendationOptions, check_page, to_params
from graph_api.loaders import prime
from graph_api.online import FeedbackQuery
from graph_api.recommendations import recommend, result_lookup, similar_items, trending_items
from graph_api.tenant_admin import TenantAdminQuery
from graph_api.training import TrainingQuery
from graph_api.types import (
    Item,
    PerformanceMetrics,
    QuotaStatus,
    RateLimitStatus,
    RecommendationResult,
    SimilarItem,
    User,
)
from storage.repositories import items as items_repo
from storage.repositories import users as users_repo


async def load_item(ctx: RequestContext, item_id: uuid.UUID) -> Item:
    await ctx.authorize()
    row = await ctx.loaders.items.load(item_id)
    if row is None:  # also for another tenant's item: existence is not revealed
        raise ObjectNotFound("Item not found.")
    return Item.from_row(row)


__all__ = ["Query", "load_item", "require_admin"]


@strawberry.type
class Query(TrainingQuery, FeedbackQuery, ExperimentQuery, TenantAdminQuery):
    @strawberry.field
    async def me(self, info: Info) -> User:
        principal = await info.context.authorize()
        row = await info.context.loaders.users.load(principal.user_id)
        if row is None:  # token outlived its user
            raise Unauthenticated("The user of this token no longer exists.")
        return User.from_row(row)

    @strawberry.field
    async def user(self, info: Info, id: uuid.UUID) -> User:
        principal = await info.context.authorize()
        if id != principal.user_id and not principal.is_admin:
            raise Forbidden("Only a tenant admin may read other users.")
        row = await info.context.loaders.users.load(id)
        if row is None:
            raise ObjectNotFound("User not found.")
        return User.from_row(row)

    @strawberry.field
    async def users(self, info: Info, limit: int = 20, offset: int = 0) -> list[User]:
        principal = await require_admin(info.context)
        check_page(limit, offset)
        async with info.context.session(readonly=True) as session:
            rows = await users_repo.list_users(
                session=session, tenant_id=principal.tenant_id, limit=limit, offset=offset
            )
        prime(info.context.loaders.users, rows, key=lambda row: row.id)
        return [User.from_row(row) for row in rows]

    @strawberry.field
    async def item(self, info: Info, id: uuid.UUID) -> Item:
        return await load_item(info.context, id)

    @strawberry.field
    async def items(
        self,
        info: Info,
        category: str | None = None,
        search: str | None = None,
        limit: int = 20,
        offset: int = 0,
    ) -> list[Item]:
        principal = await info.context.authorize()
        check_page(limit, offset)
        bounds.check_text("category", category, bounds.CATEGORY_CHARS)
        bounds.check_text("search", search, bounds.SEARCH_CHARS)
        async with info.context.session(readonly=True) as session:
            rows = await items_repo.list_items(
                session=session,
                tenant_id=principal.tenant_id,
                category=category,
                search=search,
                limit=limit,
                offset=offset,
            )
        prime(info.context.loaders.items, rows, key=lambda row: row.id)
        return [Item.from_row(row) for row in rows]

    @strawberry.field
    async def recommendations(
        self, info: Info, options: RecommendationOptions | None = None
    ) -> RecommendationResult:
        if info.context.principal is None:
            await info.context.authorize()  # UNAUTHENTICATED before any input error
        params = to_params(options)
        lookup = result_lookup(info.context, params)
        principal = await info.context.authorize(read_along=lookup)
        return await recommend(info.context, principal, params)

    @strawberry.field
    async def similar_items(
        self, info: Info, item_id: uuid.UUID, top_k: int = 10
    ) -> list[SimilarItem]:
        return await similar_items(info.context, item_id, top_k)

    @strawberry.field
    async def trending_items(
        self, info: Info, category: str | None = None, limit: int = 10
    ) -> list[SimilarItem]:
        principal = await info.context.authorize()
        if not 1 <= limit <= MAX_PAGE:
            raise BadUserInput(f"limit must be between 1 and {MAX_PAGE}.")
        bounds.check_text("category", category, bounds.CATEGORY_CHARS)
        return await trending_items(info.context, principal, category, limit)

    @strawberry.field
    async def rate_limit_status(self, info: Info) -> RateLimitStatus:
        principal = await info.context.authorize()
        admission = info.context.admission
        assert admission is not None  # set by authorize()
        async with info.context.session(readonly=True) as session:
            usage = await info.context.services.quotas.usage(session, principal)
        quotas = [
            QuotaStatus(
                name=row.name,
                used=row.used,
                limit=row.limit,
                remaining=row.remaining,
                resets_at=row.resets_at,
            )
            for row in usage
        ]
        return RateLimitStatus(
            limit=admission.limits.per_user,
            remaining=admission.user.remaining,
            used=admission.user.count,
            window_seconds=admission.window_seconds,
            tenant_limit=admission.limits.per_tenant,
            tenant_remaining=admission.tenant.remaining,
            quotas=quotas,
        )

    @strawberry.field
    async def performance_metrics(self, info: Info) -> PerformanceMetrics:
        principal = await require_admin(info.context)
        # A tenant's admin sees the tenant's own traffic, never other tenants' operations.
        snapshot = info.context.services.metrics.snapshot(principal.tenant_id)
        return PerformanceMetrics(**snapshot.__dict__)
