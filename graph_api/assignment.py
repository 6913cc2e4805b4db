"""Which options a recommendations request is served with: the tenant's promoted defaults and,
while an experiment runs, the user's variant (see ``graph_api.experiments`` for the API).

A request that leaves the choice of ranking to the service (the default ``algorithm: "hybrid"``,
no ``weights``, no ``strategy``) is served with the tenant's defaults and the options of the
user's variant. A user's variant is ``pick(shares, bucket(experiment, user))``: a hash, the same
on every replica and restart. FIXED experiments keep their shares; BANDIT ones move them by
Thompson sampling on the primary metric, recomputed from the attributed outcomes whenever a
replica refreshes its view (every ``REFRESH_S``; changes made on another replica are seen within
that time), so a user's variant may change as the shares move. A request that names its own
algorithm, weights or strategy is served as asked and is not part of the experiment.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from graph_api.experiment_stats import bucket, pick, thompson_shares
from recommend.types import HYBRID
from storage.feedback_rules import FeedbackRules
from storage.models import Experiment
from storage.repositories import experiments as experiments_repo
from storage.repositories import feedback as feedback_repo
from storage.repositories import tenants as tenants_repo

if TYPE_CHECKING:
    from graph_api.auth import Principal
    from graph_api.recommendations import RecommendationParams

SURFACE = "recommendations"
logger = logging.getLogger(__name__)
REFRESH_S = 2.0
DEFAULTS_SETTING = "recommendation_defaults"  # in Tenant.settings: a promoted variant's options
OPTION_KEYS = ("algorithm", "strategy", "weights", "diversify")
BANDIT = "bandit"


@dataclass(frozen=True)
class RunningExperiment:
    id: uuid.UUID
    names: tuple[str, ...]
    options: dict[str, dict[str, Any]]
    shares: tuple[float, ...]


@dataclass
class TenantState:
    defaults: dict[str, Any]
    experiment: RunningExperiment | None
    read_at: float
    rules: FeedbackRules = field(default_factory=FeedbackRules)
    refreshing: asyncio.Task[None] | None = field(default=None, repr=False)


class ExperimentDirectory:
    """Per tenant, the promoted defaults, the running experiment with its current shares and
    the feedback rules, read from the database at most every ``refresh_s`` (stale answers
    meanwhile; a change made on this replica is seen at once, see ``forget``)."""

    def __init__(
        self,
        database: Any,
        refresh_s: float = REFRESH_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.database = database
        self.refresh_s = refresh_s
        self._clock = clock
        self._tenants: dict[uuid.UUID, TenantState] = {}

    async def state(self, tenant_id: uuid.UUID) -> TenantState:
        known = self._tenants.get(tenant_id)
        if known is None:
            known = await self._read(tenant_id)
            self._tenants[tenant_id] = known
        elif self._clock() - known.read_at > self.refresh_s and known.refreshing is None:
            known.refreshing = asyncio.get_running_loop().create_task(self._refresh(tenant_id))
        return known

    def peek(self, tenant_id: uuid.UUID) -> TenantState | None:
        return self._tenants.get(tenant_id)

    def forget(self, tenant_id: uuid.UUID) -> None:
        """After a change made here: the next request reads it again."""
        self._tenants.pop(tenant_id, None)

    async def _refresh(self, tenant_id: uuid.UUID) -> None:
        try:
            self._tenants[tenant_id] = await self._read(tenant_id)
        except Exception as error:  # keep serving the last state; the next request tries again
            logger.warning("experiments of tenant %s not refreshed: %s", tenant_id,
                           (str(error).splitlines() or [type(error).__name__])[0])  # fmt: skip
            stale = self._tenants.get(tenant_id)
            if stale is not None:
                stale.refreshing = None
                stale.read_at = self._clock()

    async def _read(self, tenant_id: uuid.UUID) -> TenantState:
        async with self.database.session(readonly=True) as session:
            tenant = await tenants_repo.get_tenant(session=session, tenant_id=tenant_id)
            defaults = dict((tenant.settings or {}).get(DEFAULTS_SETTING) or {})
            row = await experiments_repo.running_experiment(
                session=session, tenant_id=tenant_id, surface=SURFACE
            )
            running = None
            if row is not None:
                running = await _running(session, row)
        return TenantState(
            defaults, running, self._clock(), FeedbackRules.of_tenant(tenant.settings)
        )


async def _running(session: Any, row: Experiment) -> RunningExperiment:
    names = tuple(variant["name"] for variant in row.variants)
    if row.allocation == BANDIT:
        outcomes = await feedback_repo.variant_outcomes(
            session=session, tenant_id=row.tenant_id, experiment_id=row.id
        )
        shares = tuple(thompson_shares(row.id, names, outcomes, row.metric))
    else:
        shares = tuple(float(variant["share"]) for variant in row.variants)
    options = {variant["name"]: dict(variant["options"]) for variant in row.variants}
    return RunningExperiment(row.id, names, options, shares)


@dataclass(frozen=True)
class Assignment:
    params: RecommendationParams
    experiment_id: uuid.UUID | None = None
    variant: str | None = None


def leaves_choice(params: RecommendationParams) -> bool:
    return params.algorithm == HYBRID and params.weights is None and params.strategy is None


def with_options(params: RecommendationParams, options: dict[str, Any]) -> RecommendationParams:
    changed = {key: options[key] for key in OPTION_KEYS if options.get(key) is not None}
    return replace(params, **changed) if changed else params


async def assign(
    directory: ExperimentDirectory | None, principal: Principal, params: RecommendationParams
) -> Assignment:
    """The options the request is served with, and the experiment variant if any."""
    if directory is None or not leaves_choice(params):
        return Assignment(params)
    return assigned(await directory.state(principal.tenant_id), principal, params)


def assigned(state: TenantState, principal: Principal, params: RecommendationParams) -> Assignment:
    params = with_options(params, state.defaults)
    running = state.experiment
    if running is None:
        return Assignment(params)
    name = pick(running.names, running.shares, bucket(running.id, principal.user_id))
    return Assignment(with_options(params, running.options[name]), running.id, name)


def assigned_now(
    directory: ExperimentDirectory | None, principal: Principal, params: RecommendationParams
) -> RecommendationParams:
    """``assign``'s options from what the directory holds already, without waiting: the cache
    keys read ahead with the account check (``result_lookup``) are the ones ``recommend`` uses."""
    if directory is None or not leaves_choice(params):
        return params
    state = directory.peek(principal.tenant_id)
    return params if state is None else assigned(state, principal, params).params
