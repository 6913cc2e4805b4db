"""Accounts: a tenant's registration mode, invites, and refresh-token families.

Registration used to create any unknown tenant and make the caller its admin; tenants are now
made by an operator and say who may register (``closed`` unless opened). Existing tenants
become ``closed``: an operator opens them deliberately (``recserve tenant set-registration``).
Refresh tokens rotate on use; a family row per login remembers the one token that may be
exchanged next, so a replayed older token is recognised on every replica.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOW = sa.text("CURRENT_TIMESTAMP")


def _checked_enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=16)


def _tenant_fk() -> sa.Column:
    return sa.Column(
        "tenant_id", sa.Uuid(), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    )


def _when(name: str, *, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    # Batch mode: SQLite rebuilds the table; PostgreSQL alters it in place.
    with op.batch_alter_table("tenants") as table:
        table.add_column(
            sa.Column(
                "registration",
                _checked_enum("tenant_registration", "open", "invite", "closed"),
                nullable=False,
                server_default="closed",
            )
        )
    op.create_table(
        "refresh_families",
        sa.Column("id", sa.Uuid(), primary_key=True),
        _tenant_fk(),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("current_jti", sa.String(64), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        _when("last_used_at"),
        _when("expires_at", nullable=False),
        _when("revoked_at"),
        sa.Column("revoked_reason", sa.String(32), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id", "user_id"], ["users.tenant_id", "users.id"], ondelete="CASCADE"
        ),
    )
    op.create_index("ix_refresh_families_tenant_user", "refresh_families", ["tenant_id", "user_id"])
    op.create_table(
        "tenant_invites",
        sa.Column("id", sa.Uuid(), primary_key=True),
        _tenant_fk(),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("role", _checked_enum("invite_role", "user", "admin"), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        _when("expires_at", nullable=False),
        _when("used_at"),
        sa.Column("used_by", sa.Uuid(), nullable=True),
    )
    op.create_index("ix_tenant_invites_tenant_id", "tenant_invites", ["tenant_id"])


def downgrade() -> None:
    op.drop_index("ix_tenant_invites_tenant_id", table_name="tenant_invites")
    op.drop_table("tenant_invites")
    op.drop_index("ix_refresh_families_tenant_user", table_name="refresh_families")
    op.drop_table("refresh_families")
    with op.batch_alter_table("tenants") as table:
        # SQLite's table rebuild would otherwise keep the column's CHECK without the column.
        table.drop_constraint("tenant_registration", type_="check")
        table.drop_column("registration")
