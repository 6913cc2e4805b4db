"""Training job records and leases on SQLite and PostgreSQL: concurrent claims make one job,
concurrent lease takers get one holder."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from storage.db import Database
from storage.models import JobStatus
from storage.repositories import jobs as jobs_repo
from storage.repositories.leases import acquire_lease
from tests.storage.sql_support import BACKENDS, make_tenant, migrated_database

STALE = timedelta(minutes=10)
T0 = datetime(2026, 6, 1, tzinfo=UTC)


async def _claim(database: Database, tenant_id, algorithms) -> jobs_repo.Claim:
    async with database.session() as session:
        return await jobs_repo.claim_job(
            session=session, tenant_id=tenant_id, algorithms=algorithms, stale_after=STALE
        )


@pytest.mark.parametrize("backend", BACKENDS)
async def test_concurrent_claims_make_one_job(backend: str, request: pytest.FixtureRequest) -> None:
    async with migrated_database(backend, request) as database:
        async with database.session() as session:
            tenant = await make_tenant(session)
        claims = await asyncio.gather(*(_claim(database, tenant.id, ["ease"]) for _ in range(6)))
        assert sum(claim.created for claim in claims) == 1
        assert len({claim.job.id for claim in claims}) == 1
        other = await _claim(database, tenant.id, ["als"])
        assert other.created  # another algorithm of the same tenant may train meanwhile
        async with database.session() as session:
            jobs = await jobs_repo.list_jobs(session=session, tenant_id=tenant.id)
            assert {job.status for job in jobs} == {JobStatus.QUEUED}
            await jobs_repo.finish_job(
                session=session, job_id=other.job.id, versions={"als": "v000001"}, metrics={}
            )
            # A late report never rewrites an ended job.
            await jobs_repo.fail_job(session=session, job_id=other.job.id, error="late")
            ended = await jobs_repo.get_job(
                session=session, tenant_id=tenant.id, job_id=other.job.id
            )
            assert ended is not None and ended.status == JobStatus.SUCCEEDED and ended.error is None


async def _lease(database: Database, holder: str) -> bool:
    async with database.session() as session:
        return await acquire_lease(
            session=session, name="scheduler", holder=holder, ttl=timedelta(minutes=1), now=T0
        )


@pytest.mark.parametrize("backend", BACKENDS)
async def test_concurrent_lease_takers_get_one_holder(
    backend: str, request: pytest.FixtureRequest
) -> None:
    async with migrated_database(backend, request) as database:
        taken = await asyncio.gather(*(_lease(database, f"replica-{n}") for n in range(5)))
        assert sum(taken) == 1
        winner = f"replica-{taken.index(True)}"
        assert await _lease(database, winner)  # renewing
        assert not await _lease(database, "replica-x")
