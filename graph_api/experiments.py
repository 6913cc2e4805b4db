"""The experiments API: create, report (per-variant metrics with intervals, the verdict), stop,
promote. Which options a request is served with is ``graph_api.assignment``'s."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from enum import Enum
from typing import Any

import strawberry
from strawberry.scalars import JSON

from graph_api.assignment import BANDIT, DEFAULTS_SETTING, SURFACE, with_options
from graph_api.auth import Principal
from graph_api.context import Info, RequestContext, require_admin
from graph_api.errors import BadUserInput
from graph_api.experiment_stats import MIN_EXPLORATION, estimate, thompson_shares, verdict
from graph_api.inputs import check_page, parse_weights
from graph_api.recommendations import RecommendationParams
from storage.errors import Conflict
from storage.feedback_rules import FeedbackRules
from storage.models import Experiment
from storage.repositories import experiments as experiments_repo
from storage.repositories import feedback as feedback_repo
from storage.repositories import tenants as tenants_repo

MAX_VARIANTS = 10
_VARIANT_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@strawberry.enum
class PrimaryMetric(Enum):
    CTR = "ctr"
    CONVERSION = "conversion"
    REVENUE = "revenue"


@strawberry.enum
class Allocation(Enum):
    FIXED = "fixed"
    BANDIT = "bandit"


@strawberry.input
class VariantInput:
    name: str
    share: float = strawberry.field(description="Its share of the traffic; shares sum to 1.")
    algorithm: str | None = None
    strategy: str | None = None
    weights: JSON | None = strawberry.field(
        default=None, description='Engine weights: {"als": 2.0} or [{"engine", "weight"}].'
    )
    diversify: bool | None = None


@strawberry.input
class ExperimentInput:
    name: str
    variants: list[VariantInput]
    primary_metric: PrimaryMetric = PrimaryMetric.CTR
    allocation: Allocation = strawberry.field(
        default=Allocation.FIXED,
        description="FIXED keeps the shares; BANDIT starts them equal and moves them by "
        f"Thompson sampling, never below {MIN_EXPLORATION:.0%} per variant.",
    )


@strawberry.type
class VariantReport:
    name: str
    share: float = strawberry.field(description="The share it was given.")
    current_share: float = strawberry.field(description="The share it gets now (a bandit's).")
    options: JSON
    users: int
    lists_served: int
    impressions: int
    clicks: int
    conversions: int
    revenue: float
    metric: float = strawberry.field(description="The primary metric, per list served.")
    metric_low: float = strawberry.field(description="Its 95% interval's lower end.")
    metric_high: float = strawberry.field(description="Its 95% interval's upper end.")


@strawberry.type
class ExperimentVerdict:
    p_value: float | None = strawberry.field(
        description="Two-sided p-value of the leader against the runner-up."
    )
    leader: str | None
    winner: str | None = strawberry.field(description="The leader, once p < 0.05 on enough data.")
    significant: bool
    warning: str | None


@strawberry.type
class ExperimentType:
    id: strawberry.ID
    name: str
    surface: str
    status: str
    allocation: Allocation
    primary_metric: PrimaryMetric
    created_at: datetime
    stopped_at: datetime | None
    promoted: str | None
    variants: list[VariantReport]
    verdict: ExperimentVerdict


# -- the API --------------------------------------------------------------------------------


def _checked_variants(ctx: RequestContext, variants: list[VariantInput]) -> list[dict[str, Any]]:
    if not 2 <= len(variants) <= MAX_VARIANTS:
        raise BadUserInput(f"An experiment needs 2 to {MAX_VARIANTS} variants.")
    names = [variant.name for variant in variants]
    for name in names:
        if not _VARIANT_NAME.match(name):
            raise BadUserInput(f"Variant name {name!r}: 1 to 64 letters, digits, - or _.")
    if len(set(names)) != len(names):
        raise BadUserInput("Variant names must be distinct.")
    for variant in variants:
        if not 0.0 < variant.share <= 1.0:
            raise BadUserInput(f"Variant {variant.name!r}: share must be above 0 and at most 1.")
    total = sum(variant.share for variant in variants)
    if abs(total - 1.0) > 1e-6:
        raise BadUserInput(f"Variant shares must sum to 1 (they sum to {total:g}).")
    checked = []
    catalog = ctx.services.recommender.catalog
    for variant in variants:
        options = {
            "algorithm": variant.algorithm,
            "strategy": variant.strategy,
            "weights": parse_weights(variant.weights),
            "diversify": variant.diversify,
        }
        try:
            with_options(RecommendationParams(), options).validate(catalog)
        except BadUserInput as error:
            raise BadUserInput(f"Variant {variant.name!r}: {error.message}") from error
        stored = {key: value for key, value in options.items() if value is not None}
        checked.append({"name": variant.name, "share": variant.share, "options": stored})
    return checked


async def report(ctx: RequestContext, row: Experiment) -> ExperimentType:
    names = [variant["name"] for variant in row.variants]
    async with ctx.session(readonly=True) as session:
        outcomes = await feedback_repo.variant_outcomes(
            session=session, tenant_id=row.tenant_id, experiment_id=row.id
        )
    if row.allocation == BANDIT and row.status == experiments_repo.RUNNING:
        current = thompson_shares(row.id, names, outcomes, row.metric)
    else:
        current = [float(variant["share"]) for variant in row.variants]
    variants = []
    for variant, share in zip(row.variants, current, strict=True):
        found = outcomes.get(variant["name"])
        value = estimate(found, row.metric)
        variants.append(
            VariantReport(
                name=variant["name"],
                share=float(variant["share"]),
                current_share=share,
                options=variant["options"],
                users=found.users if found else 0,
                lists_served=found.lists if found else 0,
                impressions=found.impressions if found else 0,
                clicks=found.clicks if found else 0,
                conversions=found.conversions if found else 0,
                revenue=found.revenue if found else 0.0,
                metric=value.value,
                metric_low=value.low,
                metric_high=value.high,
            )
        )
    decided = verdict(names, outcomes, row.metric)
    return ExperimentType(
        id=strawberry.ID(str(row.id)),
        name=row.name,
        surface=row.surface,
        status=row.status,
        allocation=Allocation(row.allocation),
        primary_metric=PrimaryMetric(row.metric),
        created_at=row.created_at,
        stopped_at=row.stopped_at,
        promoted=row.winner,
        variants=variants,
        verdict=ExperimentVerdict(
            p_value=decided.p_value,
            leader=decided.leader,
            winner=decided.winner,
            significant=decided.winner is not None,
            warning=decided.warning,
        ),
    )


def _experiment_id(raw: strawberry.ID) -> uuid.UUID:
    try:
        return uuid.UUID(str(raw))
    except ValueError as error:
        raise BadUserInput("id is not a valid experiment id.") from error


@strawberry.type
class ExperimentQuery:
    @strawberry.field(description="An experiment with each variant's metrics (admin).")
    async def experiment(self, info: Info, id: strawberry.ID) -> ExperimentType:
        principal = await require_admin(info.context)
        async with info.context.session(readonly=True) as session:
            row = await experiments_repo.get_experiment(
                session=session, tenant_id=principal.tenant_id, experiment_id=_experiment_id(id)
            )
        return await report(info.context, row)

    @strawberry.field(description="The tenant's experiments, newest first (admin).")
    async def experiments(
        self, info: Info, limit: int = 20, offset: int = 0
    ) -> list[ExperimentType]:
        principal = await require_admin(info.context)
        check_page(limit, offset)
        async with info.context.session(readonly=True) as session:
            rows = await experiments_repo.list_experiments(
                session=session, tenant_id=principal.tenant_id, limit=limit, offset=offset
            )
        return [await report(info.context, row) for row in rows]


@strawberry.type
class ExperimentMutation:
    @strawberry.mutation(
        description="Start an experiment on recommendations (admin); one runs at a time."
    )
    async def create_experiment(self, info: Info, input: ExperimentInput) -> ExperimentType:
        ctx = info.context
        principal = await require_admin(ctx)
        name = input.name.strip()
        if not 1 <= len(name) <= 100:
            raise BadUserInput("name must be 1 to 100 characters.")
        variants = _checked_variants(ctx, input.variants)
        metric = input.primary_metric.value
        if metric != PrimaryMetric.CTR.value:
            rules: FeedbackRules = await ctx.loaders.feedback_rules()
            if not rules.has_conversions:
                raise BadUserInput(
                    f"{input.primary_metric.name} needs conversions, and this tenant counts no "
                    "interaction type as one: set conversionTypes with updateFeedbackRules."
                )
        try:
            async with ctx.session() as session:
                row = await experiments_repo.create_experiment(
                    session=session, tenant_id=principal.tenant_id, name=name, surface=SURFACE,
                    allocation=input.allocation.value, metric=metric, variants=variants,
                )  # fmt: skip
        except Conflict as error:
            raise BadUserInput(
                "Another experiment is running on recommendations: stop it first.",
                reason="OVERLAPPING_EXPERIMENT",
            ) from error
        _forget(ctx, principal)
        return await report(ctx, row)

    @strawberry.mutation(description="Stop a running experiment (admin).")
    async def stop_experiment(self, info: Info, id: strawberry.ID) -> ExperimentType:
        ctx = info.context
        principal = await require_admin(ctx)
        async with ctx.session() as session:
            row = await experiments_repo.get_experiment(
                session=session, tenant_id=principal.tenant_id, experiment_id=_experiment_id(id)
            )
            if row.status != experiments_repo.RUNNING:
                raise BadUserInput(f"The experiment is {row.status} already.")
            await experiments_repo.end_experiment(
                session=session, experiment=row, status=experiments_repo.STOPPED
            )
        _forget(ctx, principal)
        return await report(ctx, row)

    @strawberry.mutation(
        description="Make a variant's options the tenant's defaults and end the experiment (admin)."
    )
    async def promote_variant(
        self, info: Info, experiment_id: strawberry.ID, variant: str
    ) -> ExperimentType:
        ctx = info.context
        principal = await require_admin(ctx)
        async with ctx.session() as session:
            row = await experiments_repo.get_experiment(
                session=session,
                tenant_id=principal.tenant_id,
                experiment_id=_experiment_id(experiment_id),
            )
            chosen = next((v for v in row.variants if v["name"] == variant), None)
            if chosen is None:
                known = ", ".join(v["name"] for v in row.variants)
                raise BadUserInput(f"Unknown variant {variant!r}; the variants are {known}.")
            if row.status == experiments_repo.PROMOTED:
                raise BadUserInput(f"Variant {row.winner!r} of this experiment was promoted.")
            tenant = await tenants_repo.get_tenant(session=session, tenant_id=principal.tenant_id)
            tenant.settings = {**(tenant.settings or {}), DEFAULTS_SETTING: chosen["options"]}
            stopped = row.stopped_at
            await experiments_repo.end_experiment(
                session=session,
                experiment=row,
                status=experiments_repo.PROMOTED,
                winner=variant,
                when=stopped,
            )
        _forget(ctx, principal)
        return await report(ctx, row)


def _forget(ctx: RequestContext, principal: Principal) -> None:
    if ctx.services.experiments is not None:
        ctx.services.experiments.forget(principal.tenant_id)
    ctx.refresh_loaders()
