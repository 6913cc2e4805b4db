"""GraphQL input types and their conversion into validated domain values."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import strawberry
from strawberry.scalars import JSON

from graph_api import bounds
from graph_api.errors import BadUserInput
from graph_api.recommendations import RecommendationParams

RATING_STEP = 0.5
MAX_PAGE = 100


@strawberry.input
class RegisterInput:
    email: str
    username: str
    password: str
    tenant_domain: str
    # Required when the tenant's registration is "invite"; from an admin's createInvite.
    invite_token: str | None = None


@strawberry.input
class LoginInput:
    email: str
    password: str
    tenant_domain: str


@strawberry.input
class InteractionInput:
    item_id: uuid.UUID
    interaction_type: str
    interaction_value: float | None = None
    idempotency_key: str | None = None
    recommendation_id: strawberry.ID | None = strawberry.field(
        default=None,
        description="The list the item was picked from (a recommendationId): the interaction "
        "is credited to it. Without it, to the newest list that showed the user this item "
        "within the tenant's attribution window.",
    )


@strawberry.input
class RatingInput:
    item_id: uuid.UUID
    rating: float = strawberry.field(
        description="On the tenant's rating scale (0.5 to 5 in steps of 0.5 unless the tenant "
        "set another: recserve tenant set-rating-scale)."
    )
    rated_at: datetime | None = strawberry.field(
        default=None,
        description="When the user rated it (no offset means UTC; default: now), e.g. from an "
        "offline client; not in the future.",
    )


@strawberry.input
class InteractionImportInput:
    """One past event of any user of the tenant, for an admin's bulk import."""

    user_id: uuid.UUID
    item_id: uuid.UUID
    interaction_type: str
    occurred_at: datetime = strawberry.field(
        description="When it happened (no offset means UTC); with user, item and type it "
        "identifies the event, so importing it again adds nothing."
    )
    interaction_value: float | None = None


@strawberry.input
class ItemInput:
    external_id: str | None = None
    title: str
    description: str | None = None
    category: str | None = None
    tags: list[str] | None = None
    metadata: JSON | None = None


@strawberry.input
class ItemUpdateInput:
    title: str | None = None
    description: str | None = None
    category: str | None = None
    tags: list[str] | None = None
    metadata: JSON | None = None


@strawberry.input
class RecommendationFilters:
    categories: list[str] | None = None
    exclude_item_ids: list[uuid.UUID] | None = None
    min_rating: float | None = None


@strawberry.input
class RecommendationOptions:
    algorithm: str = "hybrid"
    num_recommendations: int = 10
    diversify: bool = strawberry.field(
        default=True,
        description="Re-rank for variety (maximal marginal relevance): on by default, at a "
        "trade-off that costs at most 0.005 NDCG@10 on MovieLens-100K.",
    )
    explain: bool = False
    filters: RecommendationFilters | None = None
    weights: JSON | None = strawberry.field(
        default=None,
        description='Engine weights: {"als": 2.0} or [{"engine": "als", "weight": 2.0}].',
    )
    strategy: str | None = strawberry.field(
        default=None,
        description='The hybrid\'s strategy: "weighted" (default) blends engines by weight; '
        '"switching" serves one engine chosen by how much the user has done.',
    )


def parse_weights(raw: Any) -> dict[str, float] | None:
    """Accept ``{engine: weight}`` or ``[{engine, weight}]``; anything else is BAD_USER_INPUT."""
    if raw is None:
        return None
    bounds.check_json("weights", raw)
    bounds.check_list("weights", raw if isinstance(raw, list | dict) else None, bounds.WEIGHTS)
    pairs: list[tuple[Any, Any]]
    if isinstance(raw, dict):
        pairs = list(raw.items())
    elif isinstance(raw, list) and all(isinstance(e, dict) for e in raw):
        pairs = [(entry.get("engine"), entry.get("weight")) for entry in raw]
    else:
        raise BadUserInput("weights must be an object or a list of {engine, weight}.")
    weights: dict[str, float] = {}
    for engine, weight in pairs:
        if not isinstance(engine, str) or isinstance(weight, bool):
            raise BadUserInput("Each weight needs an engine name and a number.")
        if not isinstance(weight, int | float):
            raise BadUserInput(f"Weight of {engine!r} must be a number.")
        weights[engine] = float(weight)
    return weights


def _check_options(options: RecommendationOptions, filters: RecommendationFilters) -> None:
    bounds.check_text("algorithm", options.algorithm, bounds.NAME_CHARS)
    bounds.check_text("strategy", options.strategy, bounds.NAME_CHARS)
    bounds.check_list("filters.categories", filters.categories, bounds.CATEGORIES)
    for category in filters.categories or ():
        bounds.check_text("filters.categories", category, bounds.CATEGORY_CHARS)
    bounds.check_list("filters.excludeItemIds", filters.exclude_item_ids, bounds.EXCLUDE_ITEM_IDS)
    bounds.check_number("filters.minRating", filters.min_rating)


def to_params(options: RecommendationOptions | None) -> RecommendationParams:
    options = options or RecommendationOptions()
    filters = options.filters or RecommendationFilters()
    _check_options(options, filters)
    params = RecommendationParams(
        algorithm=options.algorithm,
        k=options.num_recommendations,
        diversify=options.diversify,
        explain=options.explain,
        categories=tuple(filters.categories) if filters.categories else None,
        exclude_item_ids=tuple(str(i) for i in filters.exclude_item_ids or ()),
        min_rating=filters.min_rating,
        weights=parse_weights(options.weights),
        strategy=options.strategy,
    )
    return params


def check_rating(rating: float) -> float:
    bounds.check_number("rating", rating)
    if not 0.5 <= rating <= 5.0 or (rating / RATING_STEP) != int(rating / RATING_STEP):
        raise BadUserInput("rating must be between 0.5 and 5 in steps of 0.5.")
    return float(rating)


def check_page(limit: int, offset: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise BadUserInput(f"limit must be between 1 and {MAX_PAGE}.")
    if offset < 0:
        raise BadUserInput("offset must not be negative.")


def check_login(data: LoginInput) -> None:
    bounds.check_text("email", data.email, bounds.EMAIL_CHARS)
    bounds.check_text("password", data.password, bounds.PASSWORD_CHARS)
    bounds.check_text("tenantDomain", data.tenant_domain, bounds.DOMAIN_CHARS)


def _check_item(data: ItemInput | ItemUpdateInput) -> None:
    bounds.check_text("externalId", getattr(data, "external_id", None), bounds.EXTERNAL_ID_CHARS)
    bounds.check_text("title", data.title, bounds.TITLE_CHARS)
    bounds.check_text("description", data.description, bounds.DESCRIPTION_CHARS)
    bounds.check_text("category", data.category, bounds.CATEGORY_CHARS)
    bounds.check_list("tags", data.tags, bounds.TAGS)
    for tag in data.tags or ():
        bounds.check_text("tags", tag, bounds.TAG_CHARS)
    if data.metadata is not None:
        bounds.check_json("metadata", data.metadata)


def item_fields(data: ItemInput | ItemUpdateInput) -> dict[str, Any]:
    """The set fields of an item input as model keyword arguments, validated."""
    _check_item(data)
    fields: dict[str, Any] = {}
    for name in ("title", "description", "category", "tags"):
        value = getattr(data, name)
        if value is not None:
            fields[name] = list(value) if name == "tags" else value
    if data.metadata is not None:
        if not isinstance(data.metadata, dict):
            raise BadUserInput("metadata must be a JSON object.", field="metadata")
        fields["item_metadata"] = data.metadata
    if "title" in fields and not str(fields["title"]).strip():
        raise BadUserInput("title must not be empty.", field="title")
    return fields
