"""Automatic retraining inside the serving app: one leader applies every tenant's policy.

Each combiner replica (and the in-process server) runs a ``Scheduler``; every
``scheduler_interval_seconds`` it tries to take or renew the ``scheduler`` lease in the
database, and only the holder looks for due tenants (``jobs.policy.due_tenants``, the
same rules as ``recserve retrain-due``: after ``after_interactions`` new interactions, after
``after_minutes``, and a never-trained tenant once it has ``first_train_min_interactions``
interactions from ``first_train_min_users`` users). A due tenant gets a job through the same
``TrainingRunner.start`` that ``trainModel`` uses, so the one-running-job rule, the records and
the Ray Train threshold apply alike. A leader that dies stops renewing: another replica takes
the lease over once it expires (three intervals). A tenant whose last scheduled job failed is
left alone for ``FAILURE_BACKOFF_INTERVALS`` intervals, so bad data does not retrain every tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from jobs.ledger import TrainingRunner
from recommend.types import TrainingJob
from storage.db import Database
from storage.models import JobStatus, JobTrigger, utcnow
from storage.repositories import jobs as jobs_repo
from storage.repositories.leases import acquire_lease, release_lease
from jobs.policy import DueTenant, due_tenants

logger = logging.getLogger(__name__)
LEASE = "scheduler"
LEASE_INTERVALS = 3
FAILURE_BACKOFF_INTERVALS = 10


class Scheduler:
    def __init__(
        self,
        runner: TrainingRunner,
        database: Database,
        *,
        clock: Callable[[], datetime] = utcnow,
        holder: str | None = None,
        algorithms: Sequence[str] | None = None,
    ) -> None:
        self.runner = runner
        # What a scheduled job trains: the engines this app serves (None: the defaults).
        self.algorithms = list(algorithms) if algorithms else None
        self.settings = runner.ledger.settings
        self.database = database
        self.clock = clock
        self.holder = holder or uuid.uuid4().hex
        self._task: asyncio.Task[None] | None = None

    @property
    def interval(self) -> timedelta:
        return timedelta(seconds=self.settings.scheduler_interval_seconds)

    async def lead(self, now: datetime) -> bool:
        """Take or renew the lease; True while this scheduler is the leader."""
        async with self.database.session() as session:
            return await acquire_lease(
                session=session,
                name=LEASE,
                holder=self.holder,
                ttl=self.interval * LEASE_INTERVALS,
                now=now,
            )

    async def _backing_off(self, tenant_id: str, now: datetime) -> bool:
        async with self.database.session() as session:
            last = await jobs_repo.last_job(
                session=session, tenant_id=uuid.UUID(tenant_id), trigger=JobTrigger.SCHEDULER
            )
        if last is None or last.status != JobStatus.FAILED or last.finished_at is None:
            return False
        return now - last.finished_at < self.interval * FAILURE_BACKOFF_INTERVALS

    async def tick(self) -> list[TrainingJob]:
        """One round: as the leader, a job for every due tenant; returns the jobs started."""
        await self.runner.ledger.ready()
        now = self.clock()
        if not await self.lead(now):
            return []
        started = []
        for due in await due_tenants(self.settings, now=now, database=self.database):
            job = await self._start(due, now)
            if job is not None:
                started.append(job)
        return started

    async def _start(self, due: DueTenant, now: datetime) -> TrainingJob | None:
        if await self._backing_off(due.tenant_id, now):
            return None
        try:
            job, created = await self.runner.start(
                due.tenant_id,
                self.algorithms,
                trigger=JobTrigger.SCHEDULER,
                reason=due.reason[:200],
            )
        except Exception:  # one tenant's trouble must not stop the others
            logger.exception("scheduled training of %s could not start", due.domain)
            return None
        if created:
            logger.info("training %s: %s (job %s)", due.domain, due.reason, job.job_id)
        return job if created else None

    async def run(self) -> None:
        """Tick every interval until cancelled; an error in one tick is logged, not fatal.

        The first round waits one interval: a new app's ingress creates the schema as it
        starts, and two processes migrating one database at once would trip each other."""
        while True:
            await asyncio.sleep(self.settings.scheduler_interval_seconds)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("retraining scheduler tick failed")

    def start(self) -> None:
        """Run in the background of the running event loop (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        """Stop ticking and hand the lease back, so another replica leads at once."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            async with self.database.session() as session:
                await release_lease(session=session, name=LEASE, holder=self.holder)
