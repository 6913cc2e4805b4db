"""The feedback loop's API: online metrics, the tenant's feedback rules, and the check of a
``recommendationId`` an interaction names (``graph_api.feedback_recorder`` records and
attributes)."""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from enum import Enum

import strawberry

from graph_api.auth import Principal
from graph_api.context import Info, RequestContext, require_admin
from graph_api.errors import BadUserInput, ObjectNotFound
from graph_api.feedback_recorder import SETTLED_AFTER_S, issued_at
from storage.errors import InvalidData
from storage.feedback_rules import FeedbackRules
from storage.repositories import feedback as feedback_repo
from storage.repositories import tenants as tenants_repo

_WINDOW = re.compile(r"^\s*(\d{1,5})\s*([mhd])\s*$")
_UNIT = {"m": 60, "h": 3600, "d": 86400}


@strawberry.enum
class MetricGroup(Enum):
    STRATEGY = "strategy"
    ALGORITHM = "algorithm"
    VARIANT = "variant"
    SURFACE = "surface"
    HOUR = "hour"
    DAY = "day"


@strawberry.type(description="One group of the lists served in the window and what they led to.")
class OnlineMetrics:
    strategy: str | None = None
    algorithm: str | None = None
    variant: str | None = None
    surface: str | None = None
    hour: datetime | None = strawberry.field(default=None, description="The group's UTC hour.")
    day: date | None = strawberry.field(default=None, description="The group's UTC day.")
    lists_served: int = strawberry.field(description="Answers (recommendationIds).")
    impressions: int = strawberry.field(description="Items shown, over all those lists.")
    clicks: int = strawberry.field(description="Interactions attributed as clicks.")
    conversions: int = strawberry.field(description="Interactions attributed as conversions.")
    ctr: float = strawberry.field(description="Share of lists with at least one click.")
    item_ctr: float = strawberry.field(description="Clicks per item shown.")
    conversion_rate: float = strawberry.field(
        description="Share of lists with at least one conversion."
    )
    revenue: float = strawberry.field(description="Sum of the conversions' interactionValue.")
    mean_reciprocal_rank: float | None = strawberry.field(
        description="Mean of 1/position (1 = first) over the clicked items; null without clicks."
    )
    coverage: float = strawberry.field(
        description="Distinct items shown over the tenant's active catalogue (from the "
        f"newest {feedback_repo.COVERAGE_LISTS:,} lists of the group at most)."
    )


@strawberry.type
class FeedbackRulesType:
    click_types: list[str]
    conversion_types: list[str]
    attribution_window_minutes: int

    @classmethod
    def of(cls, rules: FeedbackRules) -> FeedbackRulesType:
        stored = rules.stored()
        return cls(
            click_types=stored["click_types"],
            conversion_types=stored["conversion_types"],
            attribution_window_minutes=stored["attribution_window_minutes"],
        )


@strawberry.input
class FeedbackRulesInput:
    click_types: list[str]
    conversion_types: list[str]
    attribution_window_minutes: int = 30


def parse_window(text: str, retention_days: int) -> timedelta:
    """``"30m"``, ``"24h"``, ``"7d"``: up to the retention period."""
    match = _WINDOW.match(text)
    if match is None or int(match.group(1)) == 0:
        raise BadUserInput('window must be a number of minutes, hours or days: "30m", "24h", "7d".')
    window = timedelta(seconds=int(match.group(1)) * _UNIT[match.group(2)])
    if window > timedelta(days=retention_days):
        raise BadUserInput(f"window must be at most the retention period, {retention_days}d.")
    return window


def _metrics(row: feedback_repo.MetricRow, active_items: int) -> OnlineMetrics:
    group = row.group
    hour = group.get("hour")
    day = group.get("day")
    return OnlineMetrics(
        strategy=group.get("strategy"),
        algorithm=group.get("algorithm"),
        variant=group.get("variant"),
        surface=group.get("surface"),
        hour=datetime.fromtimestamp(int(hour) * 3600, UTC) if hour is not None else None,
        day=(datetime.fromtimestamp(int(day) * 86400, UTC).date() if day is not None else None),
        lists_served=row.lists,
        impressions=row.impressions,
        clicks=row.clicks,
        conversions=row.conversions,
        ctr=row.clicked_lists / row.lists,
        item_ctr=row.clicks / row.impressions if row.impressions else 0.0,
        conversion_rate=row.converted_lists / row.lists,
        revenue=row.revenue,
        mean_reciprocal_rank=row.reciprocal_rank_sum / row.clicks if row.clicks else None,
        coverage=len(row.shown_items) / active_items if active_items else 0.0,
    )


@strawberry.type
class FeedbackQuery:
    @strawberry.field(
        description="What the lists served in the window (e.g. 30m, 24h, 7d) led to, per group "
        "(admin). Attribution lags an interaction by about a second."
    )
    async def online_metrics(
        self, info: Info, window: str = "24h", group_by: list[MetricGroup] | None = None
    ) -> list[OnlineMetrics]:
        principal = await require_admin(info.context)
        span = parse_window(window, info.context.services.settings.impression_retention_days)
        names = list(dict.fromkeys(group.value for group in group_by or []))
        since = datetime.now(UTC) - span
        async with info.context.session(readonly=True) as session:
            rows = await feedback_repo.online_metrics(
                session=session, tenant_id=principal.tenant_id, since=since, group_by=names
            )
            active = await feedback_repo.active_item_count(
                session=session, tenant_id=principal.tenant_id
            )
        return [_metrics(row, active) for row in rows]

    @strawberry.field(description="Which interactions count as clicks and conversions (admin).")
    async def feedback_rules(self, info: Info) -> FeedbackRulesType:
        await require_admin(info.context)
        return FeedbackRulesType.of(await info.context.loaders.feedback_rules())


@strawberry.type
class FeedbackMutation:
    @strawberry.mutation(
        description="Set which interaction types count as clicks and as conversions, and the "
        "window in which an interaction is credited to a list that showed the item (admin)."
    )
    async def update_feedback_rules(
        self, info: Info, input: FeedbackRulesInput
    ) -> FeedbackRulesType:
        from graph_api.mutations import INTERACTION_TYPES

        principal = await require_admin(info.context)
        try:
            rules = FeedbackRules.checked(
                input.click_types,
                input.conversion_types,
                input.attribution_window_minutes,
                INTERACTION_TYPES,
            )
        except InvalidData as error:
            raise BadUserInput(str(error)) from error
        async with info.context.session() as session:
            await tenants_repo.set_tenant_feedback_rules(
                session=session, tenant_id=principal.tenant_id, rules=rules
            )
        info.context.refresh_loaders()
        if info.context.services.experiments is not None:
            info.context.services.experiments.forget(principal.tenant_id)
        return FeedbackRulesType.of(rules)


async def checked_recommendation_id(
    ctx: RequestContext, principal: Principal, raw: strawberry.ID, item_id: uuid.UUID
) -> uuid.UUID:
    """The list an interaction names. A list old enough to be stored must be the caller's and
    must have shown the item; a fresher one (perhaps still in another replica's queue) is
    checked when it is attributed."""
    try:
        named = uuid.UUID(str(raw))
    except ValueError as error:
        raise BadUserInput("recommendationId is not a valid id.") from error
    issued = issued_at(named)
    now = time.time()
    if issued is None or issued > now + 60:
        raise BadUserInput("recommendationId is not an id this service gave out.")
    if now - issued < SETTLED_AFTER_S:
        return named
    async with ctx.session(readonly=True) as session:
        impression = await feedback_repo.impression_by_id(
            session=session, tenant_id=principal.tenant_id, impression_id=named
        )
    if impression is None or impression.user_id != principal.user_id:
        raise ObjectNotFound("No list with this recommendationId was served to you.")
    if str(item_id) not in impression.items:
        raise BadUserInput("The item was not in the list this recommendationId names.")
    return named


async def feedback_rules(ctx: RequestContext, principal: Principal) -> FeedbackRules:
    """The tenant's rules, from the replica's view of the tenant (re-read every 2 s) when it
    has one: an interaction then costs no read of the tenant's row."""
    directory = ctx.services.experiments
    if directory is None:
        return await ctx.loaders.feedback_rules()
    return (await directory.state(principal.tenant_id)).rules
