"""Training jobs and leases.

A training job used to live in the memory of the replica that started it: a restart lost it and
another replica could not answer for it, nor see that the tenant was already training. Each job
is now a row (status, per-algorithm progress, times, holdout metrics, error) that ``trainModel``
and the scheduler write and every replica reads. ``leases`` holds named, expiring leases: the
retraining scheduler runs on the one replica that holds ``scheduler``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOW = sa.text("CURRENT_TIMESTAMP")
JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def _checked_enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=16)


def _when(name: str, *, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "training_jobs",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.Uuid(),
            sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            nullable=False,
        ),
        # The algorithms asked for; empty: every default algorithm.
        sa.Column("algorithms", JSON, nullable=False),
        sa.Column(
            "status",
            _checked_enum("training_job_status", "queued", "running", "succeeded", "failed"),
            nullable=False,
        ),
        sa.Column("trigger", _checked_enum("training_job_trigger", "api", "scheduler")),
        sa.Column("reason", sa.String(200), nullable=True),
        sa.Column("distributed", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("progress", JSON, nullable=False),
        sa.Column("metrics", JSON, nullable=False),
        sa.Column("versions", JSON, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        _when("updated_at", nullable=False),
        _when("started_at"),
        _when("finished_at"),
        sa.Column("duration_seconds", sa.Double(), nullable=True),
    )
    op.create_index(
        "ix_training_jobs_tenant_status", "training_jobs", ["tenant_id", "status", "created_at"]
    )
    op.create_table(
        "leases",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("holder", sa.String(100), nullable=False),
        _when("expires_at", nullable=False),
    )


def downgrade() -> None:
    op.drop_table("leases")
    op.drop_index("ix_training_jobs_tenant_status", table_name="training_jobs")
    op.drop_table("training_jobs")
