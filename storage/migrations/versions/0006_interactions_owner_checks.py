"""Interactions: the user and item foreign keys become checks of the write step and triggers.

The ``(tenant_id, user_id) -> users`` and ``(tenant_id, item_id) -> items`` keys cost one
lookup and one row lock per written interaction (≈45 µs of the server's time per row of a
bulk import). Every write path now checks the distinct users and items it writes against the
tenant once per statement, locking them (``FOR KEY SHARE``, as the keys did) so that they
cannot be deleted until the write commits (``storage.repositories.interactions``). Deleting a
user or an item, directly or through its tenant, still removes its interactions: an
``AFTER DELETE`` trigger on ``users`` and on ``items`` does what ``ON DELETE CASCADE`` did
(per statement on PostgreSQL, per row on SQLite, which has no statement triggers).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite's foreign keys have no names: batch mode names the reflected ones by this convention.
NAMING = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}
OWNERS = {"users": "user_id", "items": "item_id"}


def _fk_name(owner: str) -> str:
    if op.get_bind().dialect.name == "postgresql":
        return f"interactions_tenant_id_{OWNERS[owner]}_fkey"  # PostgreSQL's name from 0001
    return f"fk_interactions_tenant_id_{owner}"


def _create_triggers_postgresql() -> None:
    for owner, column in OWNERS.items():
        op.execute(
            f"""
            CREATE FUNCTION interactions_of_deleted_{owner}() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                DELETE FROM interactions AS i USING gone AS g
                WHERE i.tenant_id = g.tenant_id AND i.{column} = g.id;
                RETURN NULL;
            END
            $$
            """
        )
        op.execute(
            f"""
            CREATE TRIGGER {owner}_delete_interactions AFTER DELETE ON {owner}
            REFERENCING OLD TABLE AS gone FOR EACH STATEMENT
            EXECUTE FUNCTION interactions_of_deleted_{owner}()
            """
        )


def _create_triggers_sqlite() -> None:
    for owner, column in OWNERS.items():
        op.execute(
            f"""
            CREATE TRIGGER {owner}_delete_interactions AFTER DELETE ON {owner} FOR EACH ROW
            BEGIN
                DELETE FROM interactions
                WHERE tenant_id = OLD.tenant_id AND {column} = OLD.id;
            END
            """
        )


def upgrade() -> None:
    with op.batch_alter_table("interactions", naming_convention=NAMING) as table:
        for owner in OWNERS:
            table.drop_constraint(_fk_name(owner), type_="foreignkey")
    if op.get_bind().dialect.name == "postgresql":
        _create_triggers_postgresql()
    else:
        _create_triggers_sqlite()


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for owner in OWNERS:
        op.execute(
            f"DROP TRIGGER {owner}_delete_interactions" + (f" ON {owner}" if postgresql else "")
        )
        if postgresql:
            op.execute(f"DROP FUNCTION interactions_of_deleted_{owner}()")
    # Rows whose user or item is gone would fail the keys: none can exist (the triggers and the
    # write step's checks), but a key is only restored over rows that satisfy it.
    for owner, column in OWNERS.items():
        op.execute(
            f"""
            DELETE FROM interactions WHERE NOT EXISTS (
                SELECT 1 FROM {owner} AS o
                WHERE o.tenant_id = interactions.tenant_id AND o.id = interactions.{column})
            """
        )
    with op.batch_alter_table("interactions", naming_convention=NAMING) as table:
        for owner, column in OWNERS.items():
            table.create_foreign_key(
                _fk_name(owner),
                owner,
                ["tenant_id", column],
                ["tenant_id", "id"],
                ondelete="CASCADE",
            )
