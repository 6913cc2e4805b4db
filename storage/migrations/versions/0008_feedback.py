"""The feedback loop: the lists served (impressions) and the interactions they led to.

- ``impressions``: one row per answer of ``recommendations``, ``similarItems`` or
  ``trendingItems`` (its ``recommendationId``): who was shown which items in which order, how
  the list was made (strategy, algorithm, engines, model version) and, under an experiment,
  which variant served it. ``hour`` (hours since the epoch) makes the online metrics' hourly
  and daily groups one integer division on every database.
- ``attributions``: an interaction linked to the list and position it came from (explicitly by
  ``recommendationId`` or as the latest list that showed the user that item within the
  tenant's window), as a click and/or a conversion with its revenue.

- ``experiments``: a tenant's A/B tests on one surface: variants with their traffic shares and
  the options each changes, the primary metric, fixed or bandit allocation. At most one runs
  per tenant and surface (a partial unique index).

Impressions and attributions are pruned after ``RECSERVE_IMPRESSION_RETENTION_DAYS`` by the
scheduler's leader.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def _owner(table: str) -> sa.Column:
    return sa.Column(
        f"{table}_id", sa.Uuid(), sa.ForeignKey(f"{table}s.id", ondelete="CASCADE"), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("id", sa.Uuid(), primary_key=True),
        _owner("tenant"),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("surface", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("allocation", sa.String(16), nullable=False),
        sa.Column("metric", sa.String(16), nullable=False),
        sa.Column("variants", JSON, nullable=False),
        sa.Column("winner", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(
        "uq_experiments_running",
        "experiments",
        ["tenant_id", "surface"],
        unique=True,
        postgresql_where=sa.text("status = 'running'"),
        sqlite_where=sa.text("status = 'running'"),
    )
    op.create_table(
        "impressions",
        sa.Column("id", sa.Uuid(), primary_key=True),
        _owner("tenant"),
        _owner("user"),
        sa.Column("surface", sa.String(16), nullable=False),
        sa.Column("items", JSON, nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("strategy", sa.String(32), nullable=True),
        sa.Column("algorithm", sa.String(64), nullable=True),
        sa.Column("engines", JSON, nullable=False),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column(
            "experiment_id",
            sa.Uuid(),
            sa.ForeignKey("experiments.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("variant", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("hour", sa.Integer(), nullable=False),
    )
    op.create_index(
        "ix_impressions_tenant_user_created", "impressions", ["tenant_id", "user_id", "created_at"]
    )
    op.create_index("ix_impressions_tenant_created", "impressions", ["tenant_id", "created_at"])
    op.create_table(
        "attributions",
        sa.Column("interaction_id", sa.Uuid(), primary_key=True),
        _owner("tenant"),
        sa.Column(
            "impression_id",
            sa.Uuid(),
            sa.ForeignKey("impressions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("item_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("click", sa.Boolean(), nullable=False),
        sa.Column("conversion", sa.Boolean(), nullable=False),
        sa.Column("revenue", sa.Double(), nullable=False),
        sa.Column("explicit", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_attributions_impression", "attributions", ["impression_id"])
    op.create_index("ix_attributions_tenant_created", "attributions", ["tenant_id", "created_at"])


def downgrade() -> None:
    op.drop_table("attributions")
    op.drop_table("impressions")
    op.drop_table("experiments")
