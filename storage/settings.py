"""One settings object for the whole product (env prefix ``RECSERVE_``).

Defaults are the *embedded* setup: everything under ``data_dir`` and no server needed.
Each real backend is one setting away (see docs/configuration.md).
"""

from __future__ import annotations

import ipaddress
import json
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from storage.secret_strength import is_placeholder, url_password, weakness

DEV_SECRET_FILE = ".dev-jwt-secret"


def _development_secret(data_dir: Path) -> str:
    """A generated secret kept under the data dir, so the CLI that prints a token and every
    Serve replica of the same installation agree on it. Production never reads it."""
    path = data_dir.resolve() / DEV_SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        candidate = path.with_suffix(f".{secrets.token_hex(4)}")
        candidate.write_text(secrets.token_urlsafe(48))
        candidate.chmod(0o600)
        # Whoever renames first wins; a racing process then reads the winner's secret.
        if not path.exists():
            candidate.replace(path)
        else:
            candidate.unlink()
    return path.read_text().strip()


ENV_PREFIX = "RECSERVE_"
# Words that mark an environment variable as a credential even when Settings does not know it.
_SECRET_WORDS = ("SECRET", "TOKEN", "PASSWORD", "PASSWD", "API_KEY", "CREDENTIAL", "PRIVATE")


def is_secret_setting(name: str, value: str) -> bool:
    """Whether the ``RECSERVE_*`` variable ``name`` holds a credential: a ``SecretStr`` setting
    (JWT secret, ops token, Qdrant key), a URL with a password in it, or a variable whose name
    says so. Such values must never travel in a Serve config, where the dashboard shows them.
    """
    field = Settings.model_fields.get(name.removeprefix(ENV_PREFIX).lower())
    if field is not None and "SecretStr" in repr(field.annotation):
        return True
    if url_password(value):
        return True
    return any(word in name.upper() for word in _SECRET_WORDS)


QUOTA_NAMES = frozenset({"max_items", "recommendations_per_hour", "training_runs_per_day"})


class UnsafeSettingsError(Exception):
    """Raised when a production deployment would run with a development-only default."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RECSERVE_", extra="ignore")

    env: Literal["development", "test", "production"] = "development"
    data_dir: Path = Path("./data")

    database_url: str | None = None
    database_echo: bool = False
    redis_url: str | None = None
    qdrant_url: str | None = None
    qdrant_api_key: SecretStr | None = None
    artifact_uri: str | None = None

    jwt_secret: SecretStr | None = None
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    access_token_minutes: int = Field(default=30, gt=0)
    refresh_token_days: int = Field(default=14, gt=0)
    # Sign-in throttle per account (tenant + email, known or not): after this many failed
    # logins within the window, every login of that account is refused for the lockout.
    login_max_failures: int = Field(default=5, gt=0)
    login_failure_window_seconds: int = Field(default=900, gt=0)
    login_lockout_seconds: int = Field(default=900, gt=0)
    # Invites minted by a tenant admin (createInvite) expire after this many hours.
    invite_hours: int = Field(default=72, gt=0)
    # How long a user's "active" state is cached, and how often live subscriptions re-check it
    # (a deactivation also invalidates the cache and wakes subscriptions at once).
    account_state_ttl_seconds: int = Field(default=30, gt=0)

    cache_default_ttl_seconds: int = Field(default=300, gt=0)
    cache_compress_min_bytes: int = Field(default=4096, ge=0)
    # Item and user rows behind the API's DataLoaders; 0 reads the database every time.
    cache_row_ttl_seconds: int = Field(default=120, ge=0)
    # ``similarItems`` and ``trendingItems`` results, per (item or category, size); 0: uncached.
    # Dropped with the tenant's recommendations on an item change and retired by a new model.
    cache_similar_ttl_seconds: int = Field(default=600, ge=0)
    cache_trending_ttl_seconds: int = Field(default=60, ge=0)

    # The feedback loop (graph_api.feedback_recorder): impressions and attributions queued per
    # replica, written every flush; an interaction is attributed once the settle time has
    # passed (more than every replica's flush, so the list it came from is stored whoever
    # served it); both are kept for the retention period, then pruned by the scheduler's leader.
    feedback_queue_size: int = Field(default=10_000, ge=1)
    feedback_flush_seconds: float = Field(default=0.25, gt=0, le=10)
    attribution_settle_seconds: float = Field(default=1.0, gt=0, le=60)
    impression_retention_days: int = Field(default=30, ge=1, le=3650)

    # Sliding-window request budgets, in cost units per window (``recommendations`` costs 5,
    # ``similarItems`` 3 wherever it is nested, times the parents it runs for, ``trainModel``
    # 10, other root fields 1; every websocket operation and every invalid request pay too).
    # Per tier: per user and per tenant; requests without a valid token per client address.
    rate_limit_window_seconds: int = Field(default=60, gt=0)
    rate_limit_ip: int = Field(default=60, ge=0)
    rate_limit_tiers: dict[str, dict[str, int]] = {
        "basic": {"per_user": 300, "per_tenant": 3_000},
        "premium": {"per_user": 1_500, "per_tenant": 15_000},
        "enterprise": {"per_user": 6_000, "per_tenant": 60_000},
    }

    # Quotas per tier (graph_api.quotas): active catalogue items, ``recommendations`` fields per
    # clock hour and ``trainModel`` calls per UTC day, per tenant; a tier left out gets the
    # smallest figures. ``rate_limit_tiers`` paces requests, these cap what a tier may use.
    tenant_quotas: dict[str, dict[str, int]] = {
        "basic": {
            "max_items": 100_000,
            "recommendations_per_hour": 50_000,
            "training_runs_per_day": 24,
        },
        "premium": {
            "max_items": 1_000_000,
            "recommendations_per_hour": 500_000,
            "training_runs_per_day": 96,
        },
        "enterprise": {
            "max_items": 10_000_000,
            "recommendations_per_hour": 5_000_000,
            "training_runs_per_day": 480,
        },
    }

    # Memory one training run may use (GiB) when planning each engine's fit (training.fit_budget):
    # an engine that would need more is scaled down or skipped. None: half of the machine.
    train_memory_gb: float | None = Field(default=None, gt=0)
    # Where Ray Train keeps its runs and checkpoints (the fitted factors travel through one):
    # on a multi-node cluster, storage every node reaches (shared volume, s3://…). None: a
    # temporary local directory, removed after the run (single node only).
    train_storage_uri: str | None = None
    # Bytes of models one engine replica keeps loaded (MiB; least recently used evicted past
    # it, and past the engine's ``max_models_per_replica``). None: the count alone decides.
    max_model_mb: float | None = Field(default=2048.0, gt=0)
    # Largest HTTP request body the API reads (bytes); bigger ones get 413 unread.
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    # Largest file ``importFile`` takes (bytes, decoded): it travels base64 in the body, so
    # keep it under three quarters of ``max_body_bytes``. Larger files: recserve ingest file.
    max_upload_bytes: int = Field(default=700_000, gt=0)
    # Addresses (IPs or CIDRs) of the proxies in front of the API whose X-Forwarded-For is
    # believed; empty: the socket peer is the client (a client's own header is ignored).
    # (``RECSERVE_TRUSTED_PROXIES=10.0.0.0/8,127.0.0.1``: comma-separated, or a JSON list.)
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Browser origins allowed to call the API cross-origin (CORS), comma-separated or a JSON
    # list (``https://shop.example,https://admin.shop.example``; ``*`` allows any). Empty: no
    # CORS headers, so browsers refuse cross-origin calls.
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Open subscriptions (websocket operations that stream) per connection and per user, on
    # one replica; one more is refused with RATE_LIMITED.
    max_subscriptions_per_connection: int = Field(default=10, gt=0)
    max_subscriptions_per_user: int = Field(default=20, gt=0)
    # Cold start (recommend.cold): a tenant without trained models is answered from the
    # database's recent counts (its last ``cold_window_interactions`` interactions within
    # ``cold_window_days``), cached ``cold_cache_seconds`` per tenant, and from content vectors.
    cold_window_days: int = Field(default=30, gt=0)
    cold_window_interactions: int = Field(default=10_000, gt=0)
    cold_cache_seconds: float = Field(default=10.0, ge=0)
    # Share of a list reserved for items newer than the last training (0 turns it off): at
    # least one slot whenever the share is positive and such items exist.
    exploration_share: float = Field(default=0.05, ge=0, le=0.5)

    # Schema introspection and the GraphiQL page; None: on, except when env is production.
    graphql_introspection: bool | None = None
    # Known recommendations documents answered without GraphQL's executor (graph_api.fast_path):
    # the same answers for about half the CPU; off only to compare or to rule it out.
    graphql_fast_path: bool = True
    # Bearer token for /health and /metrics (the figures and per-tenant series). Unset: open in
    # development, refused in production. /health/live and /health/ready stay open for probes.
    ops_token: SecretStr | None = None

    # Automatic retraining defaults; a tenant's settings {"retrain": {...}} override them.
    retrain_after_interactions: int = Field(default=1000, ge=0)  # 0: never by count
    retrain_after_minutes: float = Field(default=24 * 60, ge=0)  # 0: never by age
    # A tenant's first training starts by itself once it has this much data.
    first_train_min_interactions: int = Field(default=50, ge=1)
    first_train_min_users: int = Field(default=2, ge=1)
    # The scheduler in the serving app (one leader across replicas, by a lease in the
    # database): checks every tenant's policy this often; off: only `recserve retrain-due`.
    scheduler_enabled: bool = True
    scheduler_interval_seconds: float = Field(default=60.0, gt=0)
    # A training job that has not reported (progress or heartbeat) for this long is taken for
    # dead: it is marked failed and no longer blocks the tenant's next training.
    training_job_stale_seconds: float = Field(default=600.0, gt=0)
    training_heartbeat_seconds: float = Field(default=30.0, gt=0)
    # ALS and SVD fit on Ray Train (2 workers of 0.5 CPU) for tenants with at least this many
    # interactions, when training runs on Ray (the Serve app); 0: never.
    train_distributed_min_interactions: int = Field(default=200_000, ge=0)
    train_distributed_workers: int = Field(default=2, ge=1)

    _dev_secret: bool = PrivateAttr(default=False)

    @property
    def introspection_enabled(self) -> bool:
        if self.graphql_introspection is not None:
            return self.graphql_introspection
        return self.env != "production"

    @field_validator("trusted_proxies", "cors_origins", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            value = json.loads(text) if text.startswith("[") else text.split(",")
        return [str(entry).strip() for entry in value or () if str(entry).strip()]

    @field_validator("tenant_quotas")
    @classmethod
    def _quotas_are_complete(cls, value: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
        # A tier missing a figure would otherwise fail on a tenant's first request.
        for tier, figures in value.items():
            missing = QUOTA_NAMES - set(figures)
            if missing or any(int(figures[name]) < 0 for name in QUOTA_NAMES):
                raise ValueError(f"tier {tier!r} needs {sorted(QUOTA_NAMES)} as numbers >= 0")
        if not value:
            raise ValueError("at least one tier is needed")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_networks(cls, value: list[str]) -> list[str]:
        # A typo must fail at startup, not silently trust nobody (or everybody).
        for entry in value:
            ipaddress.ip_network(entry, strict=False)
        return value

    @model_validator(mode="after")
    def _fill_embedded_defaults(self) -> Settings:
        if self.database_url is None:
            self.database_url = f"sqlite+aiosqlite:///{self.data_dir.resolve()}/recserve.db"
        if self.artifact_uri is None:
            self.artifact_uri = str(self.data_dir.resolve() / "artifacts")
        if self.jwt_secret is None:
            if self.env == "production":
                raise UnsafeSettingsError(
                    "RECSERVE_JWT_SECRET must be set when RECSERVE_ENV=production"
                )
            self.jwt_secret = SecretStr(_development_secret(self.data_dir))
            self._dev_secret = True
        if self.env == "production":
            self._refuse_weak_secrets()
        return self

    def _refuse_weak_secrets(self) -> None:
        """Production signs tokens and guards data with these: no placeholders, nothing
        guessable (see ``storage.secret_strength``)."""
        tokens = {"RECSERVE_JWT_SECRET": self.jwt_secret, "RECSERVE_OPS_TOKEN": self.ops_token}
        for name, secret in tokens.items():
            reason = weakness(secret.get_secret_value()) if secret is not None else None
            if reason is not None:
                raise UnsafeSettingsError(f"{name} is {reason}: generate a random one")
        passwords = {
            "RECSERVE_DATABASE_URL": url_password(self.database_url),
            "RECSERVE_REDIS_URL": url_password(self.redis_url),
            "RECSERVE_QDRANT_API_KEY": self.qdrant_api_key
            and self.qdrant_api_key.get_secret_value(),
        }
        for name, password in passwords.items():
            if password and is_placeholder(password):
                raise UnsafeSettingsError(f"{name} carries a placeholder password")

    @property
    def qdrant_path(self) -> Path:
        """Where the embedded Qdrant engine keeps its shards."""
        return self.data_dir.resolve() / "qdrant"

    @property
    def uses_dev_jwt_secret(self) -> bool:
        return self._dev_secret


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
