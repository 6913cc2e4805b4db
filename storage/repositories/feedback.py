"""Impressions (the lists served) and attributions (the interactions they led to).

Written in batches by ``graph_api.feedback_recorder``; read by attribution (a user's recent
lists) and by ``onlineMetrics`` (aggregates in SQL, grouped by how the lists were made or by
hour/day).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, delete, func, insert, literal, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Attribution, Impression, Item

# The groups onlineMetrics offers, each an expression over ``impressions``.
GROUPS = {
    "strategy": Impression.strategy,
    "algorithm": Impression.algorithm,
    "variant": Impression.variant,
    "surface": Impression.surface,
    "hour": Impression.hour,
    "day": Impression.hour // 24,  # days since the epoch
}
# Coverage reads the shown items of at most this many of the window's newest lists.
COVERAGE_LISTS = 50_000


def hour_of(when: datetime) -> int:
    """Hours since the epoch: the ``hour`` column."""
    return int(when.timestamp() // 3600)


async def add_impressions(*, session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert(Impression), list(rows))


async def add_attributions(*, session: AsyncSession, rows: Sequence[dict[str, Any]]) -> int:
    """Insert, keeping the first attribution of an interaction (a retried batch adds
    nothing twice); the number of new rows."""
    if not rows:
        return 0
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    make = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = (
        make(Attribution)
        .values(list(rows))
        .on_conflict_do_nothing(index_elements=["interaction_id"])
    )
    result = await session.execute(statement)
    return max(int(result.rowcount or 0), 0)


async def impression_by_id(
    *, session: AsyncSession, tenant_id: uuid.UUID, impression_id: uuid.UUID
) -> Impression | None:
    found = await session.scalars(
        select(Impression).where(Impression.tenant_id == tenant_id, Impression.id == impression_id)
    )
    return found.first()


async def recent_impressions(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    since: datetime,
    until: datetime,
    limit: int = 200,
) -> list[Impression]:
    """The user's lists served in ``[since, until]``, newest first."""
    found = await session.scalars(
        select(Impression)
        .where(
            Impression.tenant_id == tenant_id,
            Impression.user_id == user_id,
            Impression.created_at >= since,
            Impression.created_at <= until,
        )
        .order_by(Impression.created_at.desc(), Impression.id.desc())
        .limit(limit)
    )
    return list(found)


async def prune_feedback(*, session: AsyncSession, before: datetime) -> int:
    """Delete impressions (and their attributions) older than ``before``; how many lists."""
    await session.execute(delete(Attribution).where(Attribution.created_at < before))
    result = await session.execute(delete(Impression).where(Impression.created_at < before))
    return max(int(result.rowcount or 0), 0)


@dataclass
class MetricRow:
    group: dict[str, Any]
    lists: int
    impressions: int
    clicks: int
    clicked_lists: int
    conversions: int
    converted_lists: int
    revenue: float
    reciprocal_rank_sum: float
    shown_items: set[str]


async def online_metrics(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    since: datetime,
    group_by: Sequence[str],
    experiment_id: uuid.UUID | None = None,
) -> list[MetricRow]:
    """Per group of the tenant's lists served since ``since``: counts in SQL, and the distinct
    items shown (for coverage) from the newest ``COVERAGE_LISTS`` lists."""
    per_list = (
        select(
            Attribution.impression_id.label("impression_id"),
            func.sum(case((Attribution.click, 1), else_=0)).label("clicks"),
            func.sum(case((Attribution.conversion, 1), else_=0)).label("conversions"),
            func.sum(Attribution.revenue).label("revenue"),
            func.sum(
                case((Attribution.click, 1.0 / (Attribution.position + 1)), else_=literal(0.0))
            ).label("rr"),
        )
        .where(Attribution.tenant_id == tenant_id, Attribution.created_at >= since)
        .group_by(Attribution.impression_id)
        .subquery()
    )
    columns = [GROUPS[name].label(name) for name in group_by]
    clicks = func.coalesce(per_list.c.clicks, 0)
    conversions = func.coalesce(per_list.c.conversions, 0)
    statement = (
        select(
            *columns,
            func.count(Impression.id),
            func.sum(Impression.size),
            func.sum(clicks),
            func.sum(case((clicks > 0, 1), else_=0)),
            func.sum(conversions),
            func.sum(case((conversions > 0, 1), else_=0)),
            func.sum(func.coalesce(per_list.c.revenue, 0.0)),
            func.sum(func.coalesce(per_list.c.rr, 0.0)),
        )
        .select_from(Impression)
        .outerjoin(per_list, per_list.c.impression_id == Impression.id)
        .where(Impression.tenant_id == tenant_id, Impression.created_at >= since)
    )
    if experiment_id is not None:
        statement = statement.where(Impression.experiment_id == experiment_id)
    if columns:
        statement = statement.group_by(*columns).order_by(*columns)
    rows: list[MetricRow] = []
    for values in (await session.execute(statement)).all():
        keys, totals = values[: len(columns)], values[len(columns) :]
        if not totals[0]:
            continue
        rows.append(
            MetricRow(
                group=dict(zip(group_by, keys, strict=True)),
                lists=int(totals[0]),
                impressions=int(totals[1] or 0),
                clicks=int(totals[2] or 0),
                clicked_lists=int(totals[3] or 0),
                conversions=int(totals[4] or 0),
                converted_lists=int(totals[5] or 0),
                revenue=float(totals[6] or 0.0),
                reciprocal_rank_sum=float(totals[7] or 0.0),
                shown_items=set(),
            )
        )
    by_group = {tuple(row.group[name] for name in group_by): row for row in rows}
    shown = (
        select(*columns, Impression.items)
        .where(Impression.tenant_id == tenant_id, Impression.created_at >= since)
        .order_by(Impression.created_at.desc())
        .limit(COVERAGE_LISTS)
    )
    if experiment_id is not None:
        shown = shown.where(Impression.experiment_id == experiment_id)
    for values in (await session.execute(shown)).all():
        row = by_group.get(tuple(values[: len(columns)]))
        if row is not None:
            row.shown_items.update(values[-1])
    return rows


async def active_item_count(*, session: AsyncSession, tenant_id: uuid.UUID) -> int:
    found = await session.scalar(
        select(func.count(Item.id)).where(Item.tenant_id == tenant_id, Item.is_active.is_(True))
    )
    return int(found or 0)


@dataclass
class VariantOutcome:
    variant: str
    users: int
    lists: int
    impressions: int
    clicks: int
    clicked_lists: int
    conversions: int
    converted_lists: int
    revenue: float
    revenue_squares: float  # the sum over lists of each list's revenue squared


async def variant_outcomes(
    *, session: AsyncSession, tenant_id: uuid.UUID, experiment_id: uuid.UUID
) -> dict[str, VariantOutcome]:
    """Per variant of an experiment: who was served how many lists, and what they led to."""
    per_list = (
        select(
            Attribution.impression_id.label("impression_id"),
            func.sum(case((Attribution.click, 1), else_=0)).label("clicks"),
            func.sum(case((Attribution.conversion, 1), else_=0)).label("conversions"),
            func.sum(Attribution.revenue).label("revenue"),
        )
        .where(Attribution.tenant_id == tenant_id)
        .group_by(Attribution.impression_id)
        .subquery()
    )
    clicks = func.coalesce(per_list.c.clicks, 0)
    conversions = func.coalesce(per_list.c.conversions, 0)
    revenue = func.coalesce(per_list.c.revenue, 0.0)
    statement = (
        select(
            Impression.variant,
            func.count(func.distinct(Impression.user_id)),
            func.count(Impression.id),
            func.sum(Impression.size),
            func.sum(clicks),
            func.sum(case((clicks > 0, 1), else_=0)),
            func.sum(conversions),
            func.sum(case((conversions > 0, 1), else_=0)),
            func.sum(revenue),
            func.sum(revenue * revenue),
        )
        .select_from(Impression)
        .outerjoin(per_list, per_list.c.impression_id == Impression.id)
        .where(Impression.tenant_id == tenant_id, Impression.experiment_id == experiment_id)
        .group_by(Impression.variant)
    )
    found: dict[str, VariantOutcome] = {}
    for row in (await session.execute(statement)).all():
        if row[0] is None:
            continue
        found[row[0]] = VariantOutcome(
            row[0], int(row[1]), int(row[2]), int(row[3] or 0), int(row[4] or 0),
            int(row[5] or 0), int(row[6] or 0), int(row[7] or 0), float(row[8] or 0.0),
            float(row[9] or 0.0),
        )  # fmt: skip
    return found
