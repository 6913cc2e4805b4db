"""Idempotency keys are unique per (tenant, user), not per tenant.

With the key unique per tenant, a second user reusing a key got the first user's interaction
back and their own write was silently dropped.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Batch mode: SQLite rebuilds the table; PostgreSQL alters it in place.
    with op.batch_alter_table("interactions") as table:
        table.drop_constraint("uq_interactions_tenant_idem", type_="unique")
        table.create_unique_constraint(
            "uq_interactions_tenant_user_idem", ["tenant_id", "user_id", "idempotency_key"]
        )


def downgrade() -> None:
    # Fails if two users of a tenant now share a key: their rows cannot both stay.
    with op.batch_alter_table("interactions") as table:
        table.drop_constraint("uq_interactions_tenant_user_idem", type_="unique")
        table.create_unique_constraint(
            "uq_interactions_tenant_idem", ["tenant_id", "idempotency_key"]
        )
