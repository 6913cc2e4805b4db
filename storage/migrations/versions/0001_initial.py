"""Initial schema: tenants, users, items, interactions, ratings.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out rather than imported from storage.models: a migration must keep describing the
# schema of its own revision after the models move on.
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
NOW = sa.text("CURRENT_TIMESTAMP")


def _timestamp(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=NOW)


def _checked_enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=16)


def _tenant_fk() -> sa.Column:
    return sa.Column(
        "tenant_id", sa.Uuid(), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    )


def _user_and_item_fks() -> list[sa.ForeignKeyConstraint]:
    return [
        sa.ForeignKeyConstraint(
            ["tenant_id", "user_id"], ["users.tenant_id", "users.id"], ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id", "item_id"], ["items.tenant_id", "items.id"], ondelete="CASCADE"
        ),
    ]


def _create_tenants_and_users() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("domain", sa.String(255), nullable=False, unique=True),
        sa.Column(
            "tier",
            _checked_enum("tenant_tier", "basic", "premium", "enterprise"),
            nullable=False,
        ),
        sa.Column("settings", JSON, nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False, server_default=sa.true()),
        _timestamp("created_at"),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Uuid(), primary_key=True),
        _tenant_fk(),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("username", sa.String(150), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", _checked_enum("user_role", "user", "admin"), nullable=False),
        sa.Column("preferences", JSON, nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False, server_default=sa.true()),
        _timestamp("created_at"),
        sa.UniqueConstraint("tenant_id", "email", name="uq_users_tenant_email"),
        sa.UniqueConstraint("tenant_id", "id", name="uq_users_tenant_id"),
    )


def _create_items() -> None:
    op.create_table(
        "items",
        sa.Column("id", sa.Uuid(), primary_key=True),
        _tenant_fk(),
        sa.Column("external_id", sa.String(255), nullable=False),
        sa.Column("title", sa.String(500), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("category", sa.String(100), nullable=True),
        sa.Column("tags", JSON, nullable=False),
        sa.Column("metadata", JSON, nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False, server_default=sa.true()),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.UniqueConstraint("tenant_id", "external_id", name="uq_items_tenant_external_id"),
        sa.UniqueConstraint("tenant_id", "id", name="uq_items_tenant_id"),
    )
    op.create_index("ix_items_tenant_category", "items", ["tenant_id", "category"])


def _create_interactions_and_ratings() -> None:
    op.create_table(
        "interactions",
        sa.Column("id", sa.Uuid(), primary_key=True),
        _tenant_fk(),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("item_id", sa.Uuid(), nullable=False),
        sa.Column("interaction_type", sa.String(32), nullable=False),
        sa.Column("value", sa.Double(), nullable=False, server_default=sa.text("1.0")),
        _timestamp("created_at"),
        sa.Column("idempotency_key", sa.String(128), nullable=True),
        *_user_and_item_fks(),
        sa.UniqueConstraint("tenant_id", "idempotency_key", name="uq_interactions_tenant_idem"),
    )
    op.create_index(
        "ix_interactions_tenant_user_created",
        "interactions",
        ["tenant_id", "user_id", "created_at"],
    )
    op.create_index("ix_interactions_tenant_item", "interactions", ["tenant_id", "item_id"])
    op.create_index("ix_interactions_tenant_created", "interactions", ["tenant_id", "created_at"])
    op.create_table(
        "ratings",
        sa.Column("id", sa.Uuid(), primary_key=True),
        _tenant_fk(),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("item_id", sa.Uuid(), nullable=False),
        sa.Column("rating", sa.Double(), nullable=False),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        *_user_and_item_fks(),
        sa.UniqueConstraint("tenant_id", "user_id", "item_id", name="uq_ratings_tenant_user_item"),
        sa.CheckConstraint("rating >= 0.5 AND rating <= 5.0", name="ck_ratings_range"),
    )
    op.create_index("ix_ratings_tenant_item", "ratings", ["tenant_id", "item_id"])


def upgrade() -> None:
    _create_tenants_and_users()
    _create_items()
    _create_interactions_and_ratings()


def downgrade() -> None:
    for table in ("ratings", "interactions", "items", "users", "tenants"):
        # Dropping a table drops its indexes and constraints with it, on both backends.
        op.drop_table(table)
