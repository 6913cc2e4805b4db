"""Automatic retraining: which tenants are due under their policy, and training only those."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from jobs.ledger import JobLedger, TrainingJob
from jobs.policy import FirstTraining, RetrainPolicy, due_tenants, why_due
from jobs.runners import TrainingRunner
from jobs.scheduler import Scheduler
from storage import repositories as repo
from storage.artifacts import ArtifactStore
from storage.db import Database, migrate
from storage.settings import Settings
from tests.storage.sql_support import view_at

TRAINED_AT = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        env="test",
        retrain_after_interactions=5,
        retrain_after_minutes=60,
        first_train_min_interactions=3,  # "never" has 3 interactions from 1 user
        first_train_min_users=1,
    )


async def _tenant(
    database: Database, domain: str, events: int, retrain: dict[str, Any] | None = None
) -> str:
    async with database.session() as session:
        tenant = await repo.create_tenant(
            session=session,
            name=domain,
            domain=domain,
            settings={"retrain": retrain} if retrain is not None else None,
        )
        user = await repo.create_user(
            session=session,
            tenant_id=tenant.id,
            email=f"u@{domain}",
            username="u",
            password_hash=repo.NO_PASSWORD,
        )
        item = await repo.create_item(
            session=session, tenant_id=tenant.id, external_id="i", title="i"
        )
        for n in range(events):  # the last three arrive after the model was trained
            after = n - (events - 3)
            when = TRAINED_AT + timedelta(minutes=after + 1 if after >= 0 else after)
            await view_at(session, tenant, user, item, when)
        return str(tenant.id)


def _trained(store: ArtifactStore, tmp: Path, tenant_id: str) -> None:
    local = tmp / f"model-{tenant_id}"
    local.mkdir()
    (local / "arrays.npz").write_bytes(b"x")
    version = store.new_version(tenant_id, "popularity")
    store.save(tenant_id, "popularity", version, local, {"created_at": TRAINED_AT.isoformat()})
    store.promote(tenant_id, "popularity", version)


@pytest.fixture
async def tenants(settings: Settings, tmp_path: Path) -> dict[str, str]:
    await migrate(settings.database_url)
    database = Database.from_settings(settings)
    store = ArtifactStore(settings.artifact_uri)
    try:
        ids = {
            "never": await _tenant(database, "never.example", 3),
            "quiet": await _tenant(database, "quiet.example", 6),
            "eager": await _tenant(database, "eager.example", 6, {"after_interactions": 2}),
            "empty": await _tenant(database, "empty.example", 0),
            "broken": await _tenant(database, "broken.example", 6, {"after_hours": 1}),
        }
    finally:
        await database.dispose()
    for name in ("quiet", "eager", "empty", "broken"):
        _trained(store, tmp_path, ids[name])
    return ids


async def test_due_by_count_by_age_and_never_trained(
    settings: Settings, tenants: dict[str, str]
) -> None:
    soon = await due_tenants(settings, now=TRAINED_AT + timedelta(minutes=10))
    assert {d.tenant_id: d.new_interactions for d in soon} == {
        tenants["never"]: 3,
        tenants["eager"]: 3,  # only the interactions after its model was created
    }
    assert {d.reason for d in soon} == {"never trained", "3 new interactions (threshold 2)"}

    later = await due_tenants(settings, now=TRAINED_AT + timedelta(minutes=61))
    reasons = {d.domain: d.reason for d in later}
    assert reasons["quiet.example"] == "models older than 60 minutes"
    assert "empty.example" not in reasons  # nothing new since training: no point retraining
    assert "broken.example" not in reasons  # an invalid policy is skipped, not guessed


class Recording(TrainingRunner):
    """Claims jobs like every runner; ``broken``'s cannot be handed to a training path."""

    def __init__(self, ledger: JobLedger, broken: str) -> None:
        super().__init__(ledger, allow_distributed=False)
        self.broken = broken
        self.launched: list[str] = []

    async def _launch(self, job: TrainingJob, algorithms: list[str] | None) -> None:
        if job.tenant_id == self.broken:
            raise RuntimeError("no luck")
        self.launched.append(job.tenant_id)


async def test_a_round_starts_each_due_tenant_and_survives_failures(
    settings: Settings, tenants: dict[str, str]
) -> None:
    """``recserve retrain-due``'s round: the scheduler's code, without the lease."""
    database = Database.from_settings(settings)
    try:
        runner = Recording(JobLedger(settings, database), broken=tenants["never"])
        scheduler = Scheduler(runner, database)
        now = TRAINED_AT + timedelta(minutes=10)
        outcomes = await scheduler.round(now, reason="recserve retrain-due")
    finally:
        await database.dispose()
    by_tenant = {outcome.due.tenant_id: outcome for outcome in outcomes}
    assert sorted(by_tenant) == sorted([tenants["never"], tenants["eager"]])
    broken = by_tenant[tenants["never"]]
    assert broken.job is None and broken.error is not None and "RuntimeError" in broken.error
    started = by_tenant[tenants["eager"]]
    assert started.created and started.job is not None
    assert (started.job.trigger, started.job.reason) == ("scheduler", "recserve retrain-due")
    assert runner.launched == [tenants["eager"]]


def test_policy_merges_tenant_settings_over_defaults(settings: Settings) -> None:
    policy = RetrainPolicy.for_tenant(settings, {"retrain": {"after_minutes": 0}})
    assert (policy.after_interactions, policy.after_minutes) == (5, 0)
    old = TRAINED_AT - timedelta(days=30)
    assert why_due(policy, old, 4, TRAINED_AT) is None  # age rule off, count below threshold
    assert why_due(policy, old, 5, TRAINED_AT) == "5 new interactions (threshold 5)"
    assert why_due(policy, None, 0, TRAINED_AT) is None


async def test_a_first_training_waits_for_enough_data(
    settings: Settings, tenants: dict[str, str]
) -> None:
    """Defaults: 50 interactions from 2 users; "never" has 3 from 1, so it is not due yet."""
    strict = settings.model_copy(update={"first_train_min_interactions": 50})
    soon = await due_tenants(strict, now=TRAINED_AT + timedelta(minutes=10))
    assert tenants["never"] not in {d.tenant_id for d in soon}
    two_users = settings.model_copy(update={"first_train_min_users": 2})
    soon = await due_tenants(two_users, now=TRAINED_AT + timedelta(minutes=10))
    assert tenants["never"] not in {d.tenant_id for d in soon}
    assert tenants["eager"] in {d.tenant_id for d in soon}  # trained ones are not affected


def test_first_training_thresholds() -> None:
    policy = RetrainPolicy(after_interactions=0, after_minutes=0)
    first = FirstTraining(min_interactions=50, min_users=2)
    assert why_due(policy, None, 49, TRAINED_AT, users=5, first=first) is None
    assert why_due(policy, None, 50, TRAINED_AT, users=1, first=first) is None
    assert why_due(policy, None, 50, TRAINED_AT, users=2, first=first) == "never trained"
    assert FirstTraining.from_settings(Settings()) == FirstTraining(50, 2)
