"""One running training job per tenant and algorithm, decided by the job records in the
database (``jobs.ledger``, ``storage.repositories.jobs``), in-process path."""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from jobs.ledger import JobLedger
from jobs.runners import ThreadJobs
from recommend.inprocess import InProcessService
from recommend.model_cache import MemoryModelSource
from recommend.options import ServingOptions
from storage.db import Database
from storage.errors import InvalidData
from storage.models import utcnow
from storage.repositories import jobs as jobs_repo
from storage.settings import Settings
from tests.deployments.fakes import database_tenant, fake_train

GATE = threading.Event()
STARTED = threading.Event()
CALLS: list[str] = []


def gated_train(settings: Any, tenant_id: str, algorithms: list[str] | None, **options: Any) -> Any:
    """``fake_train`` that holds until the test opens the gate, counting its runs."""
    CALLS.append(tenant_id)
    STARTED.set()
    GATE.wait(timeout=10)
    return fake_train(settings, tenant_id, algorithms, **options)


def failing_train(settings: Any, tenant_id: str, algorithms: list[str] | None, **_: Any) -> Any:
    raise ValueError("the matrix is empty at /secret/path")


def empty_train(settings: Any, tenant_id: str, algorithms: list[str] | None, **_: Any) -> Any:
    raise InvalidData(f"tenant {tenant_id} has no interactions to train on")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path)


async def test_a_second_call_while_training_returns_the_running_job(settings: Settings) -> None:
    GATE.clear()
    STARTED.clear()
    CALLS.clear()
    tenant = await database_tenant(settings)
    local = InProcessService(
        settings,
        ["ease"],
        source=MemoryModelSource(tenant, {}),
        options=ServingOptions(train_entrypoint="tests.jobs.test_training_once:gated_train"),
    )
    first = asyncio.create_task(local.train(tenant_id=tenant, algorithms=["ease"]))
    assert await asyncio.to_thread(STARTED.wait, 10)
    again = await local.train(tenant_id=tenant, algorithms=["ease"])
    everything = await local.train(tenant_id=tenant, algorithms=None)  # covers ease too
    GATE.set()
    done = await first
    assert [tenant] == CALLS  # one run, not three
    assert again.status == everything.status == "running"
    assert again.job_id == everything.job_id == done.job_id
    assert done.status == "succeeded"
    # Once it ended, the next call trains again.
    after = await local.train(tenant_id=tenant, algorithms=["ease"])
    assert after.job_id != done.job_id and [tenant, tenant] == CALLS
    await local.stop_background()


async def test_the_rule_holds_across_replicas_and_restarts(settings: Settings) -> None:
    """Two ledgers (two replicas, or one before and after a restart) share the records."""
    tenant = await database_tenant(settings)
    first, second = JobLedger(settings), JobLedger(settings)
    try:
        job, created = await first.claim(tenant, ["ease"])
        assert created and job.status == "queued" and job.progress == {"ease": {"state": "queued"}}
        same, created_again = await second.claim(tenant, None)  # all algorithms: overlaps
        assert not created_again and same.job_id == job.job_id
        other, created_other = await second.claim(tenant, ["als"])  # another algorithm may
        assert created_other and other.job_id != job.job_id
        elsewhere = await database_tenant(settings, "other.example")
        assert (await second.claim(elsewhere, ["ease"]))[1]  # and another tenant
        assert (await second.get(job.job_id)) == job
        assert await second.get(job.job_id, elsewhere) is None  # not another tenant's
        assert await second.get("not-a-job-id") is None
    finally:
        await first.close()
        await second.close()


async def test_concurrent_claims_make_one_job(settings: Settings) -> None:
    tenant = await database_tenant(settings)
    ledgers = [JobLedger(settings) for _ in range(4)]
    try:
        for ledger in ledgers:  # each migrated (a no-op) first: Alembic runs one at a time
            assert await ledger.get(uuid.uuid4().hex) is None
        claims = await asyncio.gather(*(ledger.claim(tenant, ["ease"]) for ledger in ledgers))
        assert sum(created for _, created in claims) == 1
        assert len({job.job_id for job, _ in claims}) == 1
    finally:
        for ledger in ledgers:
            await ledger.close()


async def test_a_stale_job_is_failed_and_no_longer_blocks(settings: Settings) -> None:
    tenant = await database_tenant(settings)
    database = Database.from_settings(settings)
    try:
        async with database.session() as session:
            old = utcnow() - timedelta(hours=2)
            claim = await jobs_repo.claim_job(
                session=session,
                tenant_id=uuid.UUID(tenant),
                algorithms=["ease"],
                stale_after=timedelta(minutes=10),
                now=old,
            )
            await jobs_repo.mark_running(session=session, job_id=claim.job.id, now=old)
        ledger = JobLedger(settings, database)
        fresh, created = await ledger.claim(tenant, ["ease"])
        assert created and fresh.job_id != claim.job.id.hex
        lost = await ledger.get(claim.job.id.hex)
        assert lost is not None and lost.status == "failed" and "stopped reporting" in lost.error
        assert lost.duration_seconds is not None
    finally:
        await database.dispose()


async def test_a_failing_run_is_recorded_with_its_error(settings: Settings) -> None:
    tenant = await database_tenant(settings)
    ledger = JobLedger(settings)
    jobs = ThreadJobs(ledger, "tests.jobs.test_training_once:failing_train")
    try:
        job, _ = await jobs.start(tenant, ["ease"])
        ended = await jobs.wait(job.job_id)
        assert ended is not None and ended.status == "failed"
        # Not one of our own errors: its type only, the message (it may name hosts, paths or
        # SQL) stays in the training log.
        assert ended.error == "ValueError (details in the training logs)"
        assert ended.started_at is not None and ended.finished_at is not None
        # A failed job blocks nothing: the next start is a new job.
        assert (await jobs.start(tenant, ["ease"]))[1]
        await jobs.close()
    finally:
        await ledger.close()


async def test_a_job_records_progress_metrics_and_duration(settings: Settings) -> None:
    tenant = await database_tenant(settings)
    ledger = JobLedger(settings)
    jobs = ThreadJobs(ledger, "tests.deployments.fakes:fake_train")
    try:
        job, _ = await jobs.start(tenant, ["ease", "als"])
        ended = await jobs.wait(job.job_id)
        assert ended is not None and ended.status == "succeeded"
        assert ended.progress == {"ease": {"state": "succeeded"}, "als": {"state": "succeeded"}}
        assert ended.metrics == {name: {"ndcg@10": 0.5} for name in ("ease", "als")}
        assert ended.model_version == f"trained-{Path(settings.data_dir).name}"
        assert ended.duration_seconds is not None and ended.duration_seconds >= 0
        assert ended.error is None and ended.trigger == "api"
    finally:
        await ledger.close()


async def test_our_own_errors_are_recorded_with_their_message(settings: Settings) -> None:
    tenant = await database_tenant(settings)
    ledger = JobLedger(settings)
    jobs = ThreadJobs(ledger, "tests.jobs.test_training_once:empty_train")
    try:
        job, _ = await jobs.start(tenant, ["ease"])
        ended = await jobs.wait(job.job_id)
        assert ended is not None and ended.status == "failed"
        assert ended.error == f"tenant {tenant} has no interactions to train on"
    finally:
        await ledger.close()
