"""Interactions: two per-row costs of every write removed, with the same guarantees.

- The ``tenant_id -> tenants`` foreign key goes: the ``(tenant_id, user_id) -> users`` key
  already proves the tenant exists (a user's own ``tenant_id`` references it), and deleting a
  tenant still removes its interactions (tenant -> users -> interactions, all ON DELETE
  CASCADE). Each checked row cost a lookup and a row lock on ``tenants``.
- The idempotency key's uniqueness becomes a partial unique index over the rows that have a
  key. NULL keys never collided anyway, so the rule is the same; imported and bulk rows (no
  key) no longer write an entry into that index.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

IDEMPOTENCY = "uq_interactions_tenant_user_idem"
IDEMPOTENCY_COLUMNS = ["tenant_id", "user_id", "idempotency_key"]
HAS_KEY = sa.text("idempotency_key IS NOT NULL")
# SQLite's foreign keys have no names: batch mode names the reflected ones by this convention.
NAMING = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}


def _tenant_fk_name() -> str:
    if op.get_bind().dialect.name == "postgresql":
        return "interactions_tenant_id_fkey"  # PostgreSQL's name for 0001's unnamed key
    return "fk_interactions_tenant_id_tenants"


def upgrade() -> None:
    with op.batch_alter_table("interactions", naming_convention=NAMING) as table:
        table.drop_constraint(_tenant_fk_name(), type_="foreignkey")
        table.drop_constraint(IDEMPOTENCY, type_="unique")
    op.create_index(
        IDEMPOTENCY,
        "interactions",
        IDEMPOTENCY_COLUMNS,
        unique=True,
        postgresql_where=HAS_KEY,
        sqlite_where=HAS_KEY,
    )


def downgrade() -> None:
    op.drop_index(IDEMPOTENCY, table_name="interactions")
    with op.batch_alter_table("interactions", naming_convention=NAMING) as table:
        table.create_unique_constraint(IDEMPOTENCY, IDEMPOTENCY_COLUMNS)
        table.create_foreign_key(
            _tenant_fk_name(), "tenants", ["tenant_id"], ["id"], ondelete="CASCADE"
        )
