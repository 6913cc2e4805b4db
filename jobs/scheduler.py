"""Automatic retraining: one leader applies every tenant's policy; ``recserve retrain-due``
runs the same round once.

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
``recserve retrain-due`` (a cron job's command) runs one ``round`` with a runner of its own,
without the lease: an operator's explicit run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from jobs.ledger import TrainingJob, error_text
from jobs.policy import DueTenant, due_tenants
from jobs.runners import TrainingRunner
from storage.db import Database
from storage.models import JobStatus, JobTrigger, utcnow
from storage.repositories import jobs as jobs_repo
from storage.repositories.feedback import prune_feedback
from storage.repositories.leases import acquire_lease, release_lease
from storage.repositories.tenants import drop_orphan_partitions

logger = logging.getLogger(__name__)
LEASE = "scheduler"
LEASE_INTERVALS = 3
FAILURE_BACKOFF_INTERVALS = 10


@dataclass(frozen=True)
class Outcome:
    """What a round did for one due tenant: a job (new, or its running one), or why none."""

    due: DueTenant
    job: TrainingJob | None = None
    created: bool = False
    error: str | None = None  # why no job started


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
        async with self.database.session(readonly=True) as session:
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
        await self._tidy()
        return [o.job for o in await self.round(now) if o.created and o.job is not None]

    async def _tidy(self) -> None:
        """The leader's housekeeping: partitions that deleted tenants left behind, and served
        lists (impressions, attributions) older than the retention period."""
        try:
            async with self.database.session() as session:
                dropped = await drop_orphan_partitions(session=session)
        except Exception:  # housekeeping must not stop the round
            logger.exception("dropping the partitions of deleted tenants failed")
            dropped = []
        if dropped:
            logger.info("dropped the partitions of deleted tenants: %s", ", ".join(dropped))
        before = self.clock() - timedelta(days=self.settings.impression_retention_days)
        try:
            async with self.database.session() as session:
                pruned = await prune_feedback(session=session, before=before)
        except Exception:
            logger.exception("pruning old impressions failed")
            return
        if pruned:
            logger.info("pruned %d impressions older than %s", pruned, before.isoformat())

    async def round(
        self,
        now: datetime | None = None,
        *,
        reason: str | None = None,
        finish: Callable[[str], Awaitable[TrainingJob | None]] | None = None,
    ) -> list[Outcome]:
        """A job for every tenant due at ``now`` (unless it is backing off), leader or not;
        ``reason`` replaces the policy's on the jobs' records. With ``finish`` (a job id to
        the ended job) each new job is awaited before the next tenant's starts."""
        await self.runner.ledger.ready()
        now = now or self.clock()
        outcomes = []
        for due in await due_tenants(self.settings, now=now, database=self.database):
            outcome = await self._start(due, now, reason)
            if finish is not None and outcome.created and outcome.job is not None:
                ended = await finish(outcome.job.job_id)
                outcome = Outcome(due, ended or outcome.job, created=True)
            outcomes.append(outcome)
        return outcomes

    async def _start(self, due: DueTenant, now: datetime, reason: str | None) -> Outcome:
        if await self._backing_off(due.tenant_id, now):
            return Outcome(due, error="its last scheduled job failed: backing off")
        try:
            job, created = await self.runner.start(
                due.tenant_id,
                self.algorithms,
                trigger=JobTrigger.SCHEDULER,
                reason=(reason or due.reason)[:200],
            )
        except Exception as error:  # one tenant's trouble must not stop the others
            logger.exception("scheduled training of %s could not start", due.domain)
            return Outcome(due, error=error_text(error))
        if created:
            logger.info("training %s: %s (job %s)", due.domain, due.reason, job.job_id)
        return Outcome(due, job, created)

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
