"""The relational data model: tenants, users, items, interactions, ratings.

Portable across SQLite and PostgreSQL: ``Uuid`` keys (native UUID on PostgreSQL, CHAR(32) on
SQLite), JSON (JSONB on PostgreSQL), enums stored as checked VARCHARs, timestamps always UTC.
Ratings point at users and items through *composite* foreign keys ``(tenant_id, user_id)`` /
``(tenant_id, item_id)``, so the database itself refuses a row that mixes tenants; interactions
get the same guarantee from their write paths' checks and from delete triggers (migration 0006).
The schema is created by Alembic (``storage/migrations``), never ``create_all``.

JSON columns are not mutation-tracked: assign a new dict/list instead of editing in place.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Enum,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

RATING_MIN = 0.5
RATING_MAX = 5.0


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite would hand back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        # SQLite stores text and compares it as text: one fixed, naive UTC form keeps order.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None or value.tzinfo is not None:
            return value
        return value.replace(tzinfo=UTC)


JsonType = JSON().with_variant(JSONB(), "postgresql")


class TenantTier(StrEnum):
    BASIC = "basic"
    PREMIUM = "premium"
    ENTERPRISE = "enterprise"


class UserRole(StrEnum):
    USER = "user"
    ADMIN = "admin"


class Registration(StrEnum):
    """Who may sign up through ``register``: anyone, holders of an invite, or nobody."""

    OPEN = "open"
    INVITE = "invite"
    CLOSED = "closed"


def _str_enum(enum: type[StrEnum], name: str) -> Enum:
    return Enum(
        enum,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [member.value for member in members],
    )


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UtcDateTime(),
        dict[str, Any]: JsonType,
    }


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200))
    domain: Mapped[str] = mapped_column(String(255), unique=True)
    tier: Mapped[TenantTier] = mapped_column(
        _str_enum(TenantTier, "tenant_tier"), default=TenantTier.BASIC
    )
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Closed unless an operator opens it: registering never creates a tenant.
    registration: Mapped[Registration] = mapped_column(
        _str_enum(Registration, "tenant_registration"),
        default=Registration.CLOSED,
        server_default=Registration.CLOSED.value,
    )


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        UniqueConstraint("tenant_id", "email", name="uq_users_tenant_email"),
        UniqueConstraint("tenant_id", "id", name="uq_users_tenant_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(320))
    username: Mapped[str] = mapped_column(String(150))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[UserRole] = mapped_column(_str_enum(UserRole, "user_role"), default=UserRole.USER)
    preferences: Mapped[dict[str, Any]] = mapped_column(default=dict)
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RefreshFamily(Base):
    """One login's chain of refresh tokens: only ``current_jti`` may be exchanged next.

    Each refresh replaces ``current_jti``; presenting an older token of the family means it was
    copied, so the whole family is revoked (``revoked_at``) and every descendant stops working.
    """

    __tablename__ = "refresh_families"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "user_id"], ["users.tenant_id", "users.id"], ondelete="CASCADE"
        ),
        Index("ix_refresh_families_tenant_user", "tenant_id", "user_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    current_jti: Mapped[str] = mapped_column(String(64))
    generation: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_reason: Mapped[str | None] = mapped_column(String(32), default=None)


class Invite(Base):
    """A single-use, expiring permission to register in one tenant (only its hash is kept)."""

    __tablename__ = "tenant_invites"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str | None] = mapped_column(String(320), default=None)
    role: Mapped[UserRole] = mapped_column(
        _str_enum(UserRole, "invite_role"), default=UserRole.USER
    )
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None] = mapped_column(default=None)
    used_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)


class Item(Base):
    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("tenant_id", "external_id", name="uq_items_tenant_external_id"),
        UniqueConstraint("tenant_id", "id", name="uq_items_tenant_id"),
        Index("ix_items_tenant_category", "tenant_id", "category"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(255))
    title: Mapped[str] = mapped_column(String(500))
    description: Mapped[str | None] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(String(100))
    tags: Mapped[list[str]] = mapped_column(JsonType, default=list)
    # "metadata" is reserved on declarative classes, hence the attribute name.
    item_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Interaction(Base):
    __tablename__ = "interactions"
    # PostgreSQL partitions it by tenant, one partition each, and its primary key there is
    # (tenant_id, id) (migration 0007: a new tenant's first large import is loaded in bulk,
    # storage.repositories.interaction_loads); ids are time-ordered UUIDs, unique on their own.
    # No foreign keys (migration 0006): every write checks and locks its rows' users and items
    # once per statement (storage.repositories.interactions), and triggers on users and items
    # delete their interactions as ON DELETE CASCADE did.
    __table_args__ = (
        # Only keyed rows are deduplicated, so only they are in the index (bulk and imported
        # rows have no key). One key per user: another user's same key is another request.
        Index(
            "uq_interactions_tenant_user_idem",
            "tenant_id",
            "user_id",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
            sqlite_where=text("idempotency_key IS NOT NULL"),
        ),
        Index("ix_interactions_tenant_user_created", "tenant_id", "user_id", "created_at"),
        Index("ix_interactions_tenant_item", "tenant_id", "item_id"),
        Index("ix_interactions_tenant_created", "tenant_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    item_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    interaction_type: Mapped[str] = mapped_column(String(32))
    value: Mapped[float] = mapped_column(default=1.0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    idempotency_key: Mapped[str | None] = mapped_column(String(128))


class Rating(Base):
    __tablename__ = "ratings"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "user_id"], ["users.tenant_id", "users.id"], ondelete="CASCADE"
        ),
        ForeignKeyConstraint(
            ["tenant_id", "item_id"], ["items.tenant_id", "items.id"], ondelete="CASCADE"
        ),
        UniqueConstraint("tenant_id", "user_id", "item_id", name="uq_ratings_tenant_user_item"),
        CheckConstraint(
            f"rating >= {RATING_MIN} AND rating <= {RATING_MAX}", name="ck_ratings_range"
        ),
        Index("ix_ratings_tenant_item", "tenant_id", "item_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    item_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    rating: Mapped[float]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class JobTrigger(StrEnum):
    API = "api"  # trainModel
    SCHEDULER = "scheduler"  # the retraining policy, or a tenant's first training


class TrainingJobRecord(Base):
    """One training run of a tenant, as every replica sees it (``storage.repositories.jobs``).

    ``progress`` maps each algorithm to its state (``queued``, ``running``, ``succeeded``,
    ``skipped`` with a reason); ``updated_at`` moves with every write, so a job whose process
    died stops counting as running once it is older than the stale limit."""

    __tablename__ = "training_jobs"
    __table_args__ = (Index("ix_training_jobs_tenant_status", "tenant_id", "status", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    algorithms: Mapped[list[str]] = mapped_column(JsonType, default=list)
    status: Mapped[JobStatus] = mapped_column(
        _str_enum(JobStatus, "training_job_status"), default=JobStatus.QUEUED
    )
    trigger: Mapped[JobTrigger | None] = mapped_column(
        _str_enum(JobTrigger, "training_job_trigger"), default=JobTrigger.API
    )
    reason: Mapped[str | None] = mapped_column(String(200), default=None)
    distributed: Mapped[bool] = mapped_column(Boolean, default=False)
    progress: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    versions: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    duration_seconds: Mapped[float | None] = mapped_column(default=None)


class Lease(Base):
    """A named lease held by one process until ``expires_at`` (e.g. the scheduler's leader)."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    holder: Mapped[str] = mapped_column(String(100))
    expires_at: Mapped[datetime]


class Experiment(Base):
    """An A/B test of one tenant on one surface (``graph_api.experiments``)."""

    __tablename__ = "experiments"
    __table_args__ = (
        Index(
            "uq_experiments_running",
            "tenant_id",
            "surface",
            unique=True,
            postgresql_where=text("status = 'running'"),
            sqlite_where=text("status = 'running'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    surface: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))  # running | stopped | promoted
    allocation: Mapped[str] = mapped_column(String(16))  # fixed | bandit
    metric: Mapped[str] = mapped_column(String(16))  # ctr | conversion | revenue
    # [{"name", "share", "options": {algorithm, strategy, weights, diversify}}]
    variants: Mapped[list[dict[str, Any]]] = mapped_column(JsonType)
    winner: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    stopped_at: Mapped[datetime | None] = mapped_column(default=None)


class Impression(Base):
    """One list served to a user (a ``recommendationId``): written off the request path by
    ``graph_api.feedback_recorder``, pruned after the retention period."""

    __tablename__ = "impressions"
    __table_args__ = (
        Index("ix_impressions_tenant_user_created", "tenant_id", "user_id", "created_at"),
        Index("ix_impressions_tenant_created", "tenant_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    surface: Mapped[str] = mapped_column(String(16))
    items: Mapped[list[str]] = mapped_column(JsonType)
    size: Mapped[int] = mapped_column(Integer)
    strategy: Mapped[str | None] = mapped_column(String(32), default=None)
    algorithm: Mapped[str | None] = mapped_column(String(64), default=None)
    engines: Mapped[list[str]] = mapped_column(JsonType, default=list)
    model_version: Mapped[str | None] = mapped_column(String(64), default=None)
    experiment_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("experiments.id", ondelete="SET NULL"), default=None
    )
    variant: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    hour: Mapped[int] = mapped_column(Integer)


class Attribution(Base):
    """An interaction credited to the list (impression) and position it came from."""

    __tablename__ = "attributions"
    __table_args__ = (
        Index("ix_attributions_impression", "impression_id"),
        Index("ix_attributions_tenant_created", "tenant_id", "created_at"),
    )

    interaction_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    impression_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("impressions.id", ondelete="CASCADE")
    )
    item_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    position: Mapped[int] = mapped_column(Integer)
    click: Mapped[bool] = mapped_column(Boolean)
    conversion: Mapped[bool] = mapped_column(Boolean)
    revenue: Mapped[float] = mapped_column()
    explicit: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
