"""The retraining scheduler of the serving app: one leader by a lease in the database, the
policy applied through the same job path as ``trainModel``; a fake clock drives it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jobs.ledger import JobLedger
from jobs.runners import ThreadJobs
from jobs.scheduler import FAILURE_BACKOFF_INTERVALS, LEASE_INTERVALS, Scheduler
from storage import repositories as repo
from storage.db import Database, migrate
from storage.repositories.leases import acquire_lease, release_lease
from storage.settings import Settings

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        env="test",
        scheduler_interval_seconds=10,
        first_train_min_interactions=4,
        first_train_min_users=2,
    )


@pytest.fixture
async def database(settings: Settings):
    await migrate(settings.database_url)
    database = Database.from_settings(settings)
    yield database
    await database.dispose()


async def _tenant(database: Database, domain: str, users: int, events_each: int) -> str:
    async with database.session() as session:
        tenant = await repo.create_tenant(session=session, name=domain, domain=domain)
        item = await repo.create_item(
            session=session, tenant_id=tenant.id, external_id="i", title="i"
        )
        for n in range(users):
            user = await repo.create_user(
                session=session,
                tenant_id=tenant.id,
                email=f"u{n}@{domain}",
                username=f"u{n}",
                password_hash=repo.NO_PASSWORD,
            )
            for _ in range(events_each):
                await repo.record_interaction(
                    session=session,
                    tenant_id=tenant.id,
                    user_id=user.id,
                    item_id=item.id,
                    interaction_type="view",
                    created_at=T0 - timedelta(minutes=5),
                )
        return str(tenant.id)


async def _lease(database: Database, holder: str, at: datetime, ttl: float = 30) -> bool:
    async with database.session() as session:
        return await acquire_lease(
            session=session, name="test", holder=holder, ttl=timedelta(seconds=ttl), now=at
        )


async def test_one_lease_holder_until_it_expires_or_is_released(database: Database) -> None:
    assert await _lease(database, "a", T0)
    assert not await _lease(database, "b", T0 + timedelta(seconds=1))
    assert await _lease(database, "a", T0 + timedelta(seconds=20))  # renewed: until +50 s
    assert not await _lease(database, "b", T0 + timedelta(seconds=45))
    assert await _lease(database, "b", T0 + timedelta(seconds=51))  # a stopped renewing
    assert not await _lease(database, "a", T0 + timedelta(seconds=52))
    async with database.session() as session:
        await release_lease(session=session, name="test", holder="a")  # not a's: no effect
    assert not await _lease(database, "a", T0 + timedelta(seconds=53))
    async with database.session() as session:
        await release_lease(session=session, name="test", holder="b")
    assert await _lease(database, "a", T0 + timedelta(seconds=54))  # at once, no expiry wait


async def test_only_the_leader_starts_jobs_and_only_for_tenants_with_enough_data(
    settings: Settings, database: Database
) -> None:
    ready = await _tenant(database, "ready.example", users=2, events_each=2)
    await _tenant(database, "lonely.example", users=1, events_each=10)  # one user only
    await _tenant(database, "sparse.example", users=3, events_each=1)  # 3 interactions
    clock = Clock()
    ledger = JobLedger(settings, database)
    first = Scheduler(
        ThreadJobs(ledger, "tests.deployments.fakes:fake_train"), database, clock=clock
    )
    other_jobs = ThreadJobs(ledger, "tests.deployments.fakes:fake_train")
    second = Scheduler(other_jobs, database, clock=clock)
    started = await first.tick()
    assert [job.tenant_id for job in started] == [ready]
    assert started[0].trigger == "scheduler" and started[0].reason == "never trained"
    assert await second.tick() == []  # not the leader
    ended = await first.runner.wait(started[0].job_id)  # type: ignore[attr-defined]
    assert ended is not None and ended.status == "succeeded"
    # The leader's lease lapses once it stops ticking: the other replica takes over.
    clock.now += first.interval * LEASE_INTERVALS + timedelta(seconds=1)
    taken = await second.tick()
    assert [job.tenant_id for job in taken] == [ready]  # fake training promotes nothing
    await other_jobs.wait(taken[0].job_id)
    assert await first.tick() == []
    await second.stop()  # hands the lease back
    assert len(await first.tick()) == 1


async def test_a_running_job_is_not_started_twice(settings: Settings, database: Database) -> None:
    tenant = await _tenant(database, "busy.example", users=2, events_each=2)
    ledger = JobLedger(settings, database)
    running, created = await ledger.claim(tenant, ["ease"])  # e.g. a trainModel call
    assert created
    scheduler = Scheduler(
        ThreadJobs(ledger, "tests.deployments.fakes:fake_train"), database, clock=Clock()
    )
    assert await scheduler.tick() == []  # the tenant's all-algorithm job would overlap
    assert (await ledger.get(running.job_id)).status == "queued"  # type: ignore[union-attr]


async def test_a_failing_tenant_is_left_alone_for_a_while(
    settings: Settings, database: Database
) -> None:
    tenant = await _tenant(database, "broken.example", users=2, events_each=2)
    clock = Clock()
    jobs = ThreadJobs(JobLedger(settings, database), "tests.jobs.test_training_once:failing_train")
    scheduler = Scheduler(jobs, database, clock=clock)
    [job] = await scheduler.tick()
    failed = await jobs.wait(job.job_id)
    assert failed is not None and failed.status == "failed"
    # The backoff counts from when the job finished (the real clock writes finished_at).
    assert failed.finished_at is not None
    clock.now = failed.finished_at + scheduler.interval
    assert await scheduler.tick() == []
    clock.now = failed.finished_at + scheduler.interval * (FAILURE_BACKOFF_INTERVALS + 1)
    again = await scheduler.tick()
    assert [j.tenant_id for j in again] == [tenant]
    await jobs.wait(again[0].job_id)
    assert uuid.UUID(again[0].job_id) != uuid.UUID(job.job_id)
