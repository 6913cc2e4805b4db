"""What the app served and what came of it, written off the request path.

Each answer of ``recommendations``, ``similarItems`` and ``trendingItems`` gets a
``recommendationId`` (a time-ordered UUIDv7, so its age can be read from it) and is queued as
one impression; a background task writes the queue in batches every ``flush_s``. The queue is
bounded: when it is full an impression is dropped and counted
(``feedback_dropped_total{kind="impression"}``), never waited for.

An interaction of a click or conversion type is queued for attribution too and resolved once
``settle_s`` has passed (longer than any replica's flush interval, so the list it came from is
in the database whichever replica served it): to the list its ``recommendationId`` names, or
else to the newest list that showed the user that item within the tenant's window. Resolved
attributions are written once per interaction (a retried batch adds nothing twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from storage import meters
from storage.errors import StorageError
from storage.feedback_rules import FeedbackRules
from storage.repositories import feedback as feedback_repo

logger = logging.getLogger(__name__)

WRITE_ATTEMPTS = 3
# A client may hold a list for a while before clicking; ids of lists older than this that are
# not in the database were never served (checked by ``check_recommendation_id``).
SETTLED_AFTER_S = 10.0
RETRY_AFTER_SETTLES = 4


def new_recommendation_id(now: float | None = None) -> uuid.UUID:
    """A version-7 UUID (RFC 9562): 48 bits of Unix milliseconds, then random bits."""
    millis = int((time.time() if now is None else now) * 1000)
    raw = bytearray(millis.to_bytes(6, "big") + os.urandom(10))
    raw[6] = (raw[6] & 0x0F) | 0x70
    raw[8] = (raw[8] & 0x3F) | 0x80
    return uuid.UUID(bytes=bytes(raw))


def issued_at(recommendation_id: uuid.UUID) -> float | None:
    """When a ``new_recommendation_id`` was made (Unix seconds), None for other UUIDs."""
    if recommendation_id.version != 7:
        return None
    return int.from_bytes(recommendation_id.bytes[:6], "big") / 1000.0


@dataclass(frozen=True)
class Served:
    id: uuid.UUID
    tenant_id: uuid.UUID
    user_id: uuid.UUID
    surface: str
    items: tuple[str, ...]
    strategy: str | None
    algorithm: str | None
    engines: tuple[str, ...]
    model_version: str | None
    experiment_id: uuid.UUID | None
    variant: str | None
    at: datetime

    def row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant_id": self.tenant_id,
            "user_id": self.user_id,
            "surface": self.surface,
            "items": list(self.items),
            "size": len(self.items),
            "strategy": self.strategy,
            "algorithm": self.algorithm,
            "engines": list(self.engines),
            "model_version": self.model_version,
            "experiment_id": self.experiment_id,
            "variant": self.variant,
            "created_at": self.at,
            "hour": feedback_repo.hour_of(self.at),
        }


@dataclass(frozen=True)
class Outcome:
    """An interaction waiting to be attributed."""

    interaction_id: uuid.UUID
    tenant_id: uuid.UUID
    user_id: uuid.UUID
    item_id: uuid.UUID
    click: bool
    conversion: bool
    revenue: float
    recommendation_id: uuid.UUID | None
    window: timedelta
    at: datetime
    due: float  # monotonic time after which it is resolved
    tries: int = 0


class FeedbackRecorder:
    """One per app instance (every ingress replica, the in-process server)."""

    def __init__(
        self,
        database: Any,
        *,
        queue_size: int = 10_000,
        flush_s: float = 0.25,
        settle_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.database = database
        self.queue_size = queue_size
        self.flush_s = flush_s
        self.settle_s = settle_s
        self._clock = clock
        self._impressions: deque[Served] = deque()
        self._outcomes: deque[Outcome] = deque()
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    # -- the request path: never waits ---------------------------------------------------------

    def served(
        self,
        *,
        tenant_id: uuid.UUID,
        user_id: uuid.UUID,
        surface: str,
        items: Sequence[str],
        strategy: str | None = None,
        algorithm: str | None = None,
        engines: Sequence[str] = (),
        model_version: str | None = None,
        experiment_id: uuid.UUID | None = None,
        variant: str | None = None,
    ) -> uuid.UUID:
        """The new list's ``recommendationId``; its impression is queued (or dropped)."""
        now = time.time()
        served = Served(
            new_recommendation_id(now), tenant_id, user_id, surface, tuple(items), strategy,
            algorithm, tuple(engines), model_version, experiment_id, variant,
            datetime.fromtimestamp(now, UTC),
        )  # fmt: skip
        if len(self._impressions) >= self.queue_size:
            meters.feedback_dropped("impression")
        else:
            self._impressions.append(served)
            meters.impressions(tenant_id, variant)
        return served.id

    def interacted(
        self,
        *,
        rules: FeedbackRules,
        interaction_id: uuid.UUID,
        tenant_id: uuid.UUID,
        user_id: uuid.UUID,
        item_id: uuid.UUID,
        interaction_type: str,
        value: float,
        at: datetime,
        recommendation_id: uuid.UUID | None,
    ) -> None:
        click, conversion = rules.counts(interaction_type)
        if not (click or conversion):
            return
        if len(self._outcomes) >= self.queue_size:
            meters.feedback_dropped("attribution")
            return
        self._outcomes.append(
            Outcome(
                interaction_id, tenant_id, user_id, item_id, click, conversion,
                value if conversion else 0.0, recommendation_id,
                timedelta(minutes=rules.window_minutes), at, self._clock() + self.settle_s,
            )
        )  # fmt: skip

    # -- the background writer ---------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._stopping = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="feedback")

    async def stop(self) -> None:
        """Write what is queued (outcomes whatever their settle time) and stop. A flush under
        way finishes first: cancelled inside its transaction, it left SQLite's write lock held
        by a connection nobody would roll back, and the final flush then waited out the busy
        timeout and dropped what was queued."""
        if self._task is not None:
            self._stopping.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush(everything=True)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self.flush_s)
            if self._stopping.is_set():
                return
            try:
                await self.flush()
            except Exception:  # the writer must outlive any one batch
                logger.exception("writing feedback failed")

    async def flush(self, *, everything: bool = False) -> None:
        """Write the queued impressions, then resolve the outcomes that are due."""
        await self._write_impressions()
        now = self._clock()
        due = [o for o in self._outcomes if everything or o.due <= now]
        if due:
            waiting = [o for o in self._outcomes if not (everything or o.due <= now)]
            self._outcomes = deque(waiting)
            await self._attribute(due, final=everything)

    async def _write_impressions(self) -> None:
        batch: list[Served] = []
        while self._impressions and len(batch) < 1000:
            batch.append(self._impressions.popleft())
        if not batch:
            return
        rows = [served.row() for served in batch]
        if not await self._write(lambda s: feedback_repo.add_impressions(session=s, rows=rows)):
            meters.feedback_dropped("impression", len(batch))
        if self._impressions:
            await self._write_impressions()

    async def _write(self, operation: Callable[[Any], Any]) -> bool:
        for attempt in range(WRITE_ATTEMPTS):
            try:
                async with self.database.session() as session:
                    await operation(session)
                return True
            except StorageError as error:
                # the first line: the cause, not the statement and its placeholders
                cause = (str(error).splitlines() or [type(error).__name__])[0]
                logger.warning("feedback write failed (attempt %d): %s", attempt + 1, cause)
                await asyncio.sleep(0.2 * (attempt + 1))
        return False

    async def _attribute(self, outcomes: list[Outcome], *, final: bool = False) -> None:
        credited: list[tuple[Outcome, str | None]] = []
        unresolved: list[Outcome] = []

        async def resolve(session: Any) -> None:
            rows: list[dict[str, Any]] = []
            credited.clear()
            unresolved.clear()
            for outcome in outcomes:
                found = await _source(session, outcome)
                if found is None:
                    unresolved.append(outcome)
                    continue
                impression, position = found
                rows.append(
                    {
                        "interaction_id": outcome.interaction_id,
                        "tenant_id": outcome.tenant_id,
                        "impression_id": impression.id,
                        "item_id": outcome.item_id,
                        "position": position,
                        "click": outcome.click,
                        "conversion": outcome.conversion,
                        "revenue": outcome.revenue,
                        "explicit": outcome.recommendation_id is not None,
                        "created_at": outcome.at,
                    }
                )
                credited.append((outcome, impression.variant))
            await feedback_repo.add_attributions(session=session, rows=rows)

        if not await self._write(resolve):
            meters.feedback_dropped("attribution", len(outcomes))
            return
        if not final:
            self._retry_later(unresolved)
        for outcome, variant in credited:
            meters.attributed(
                outcome.tenant_id, variant, click=outcome.click, conversion=outcome.conversion
            )

    def _retry_later(self, unresolved: list[Outcome]) -> None:
        """The list an interaction came from may not be stored yet (a replica whose writes
        are being retried): a named list is looked for until its id is ``SETTLED_AFTER_S``
        old, an unnamed one once more, ``RETRY_AFTER_SETTLES`` settle times later."""
        now, wall = self._clock(), time.time()
        for outcome in unresolved:
            named = outcome.recommendation_id
            issued = issued_at(named) if named is not None else None
            if named is not None:
                again = issued is not None and wall - issued < SETTLED_AFTER_S
            else:
                again = outcome.tries < 1
            if again and len(self._outcomes) < self.queue_size:
                later = now + self.settle_s * RETRY_AFTER_SETTLES
                self._outcomes.append(replace(outcome, due=later, tries=outcome.tries + 1))


async def _source(session: Any, outcome: Outcome) -> tuple[Any, int] | None:
    """The impression and position an outcome came from, or None."""
    item = str(outcome.item_id)
    if outcome.recommendation_id is not None:
        named = await feedback_repo.impression_by_id(
            session=session, tenant_id=outcome.tenant_id, impression_id=outcome.recommendation_id
        )
        if named is None or named.user_id != outcome.user_id or item not in named.items:
            return None
        return named, list(named.items).index(item)
    recent = await feedback_repo.recent_impressions(
        session=session,
        tenant_id=outcome.tenant_id,
        user_id=outcome.user_id,
        since=outcome.at - outcome.window,
        until=outcome.at + timedelta(seconds=1),  # clocks of two replicas of one cluster
    )
    for impression in recent:
        if item in impression.items:
            return impression, list(impression.items).index(item)
    return None
