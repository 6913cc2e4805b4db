"""At most one running training job per tenant and algorithm, on either training path.

Training is the most expensive thing a caller can start (minutes of CPU), so ``trainModel``
called again while a job of the tenant covers any of the same algorithms returns that job
(status ``running``) instead of starting another. Both paths keep their jobs here: the Ray
one (``deployments.training_jobs``, on the combiner) and the in-process one
(``deployments.inprocess``). No Ray import: the in-process server has none.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from graph_api.recommender import TrainingJob


def _covered(algorithms: Sequence[str] | None) -> frozenset[str] | None:
    """The algorithms a job trains; None (or empty) means all of them."""
    return frozenset(algorithms) if algorithms else None


def _overlap(first: frozenset[str] | None, second: frozenset[str] | None) -> bool:
    return first is None or second is None or bool(first & second)


@dataclasses.dataclass
class _Running:
    job: TrainingJob
    algorithms: frozenset[str] | None
    done: Callable[[], bool]


class RunningJobs:
    """The jobs still running, by id; ``done`` tells when one has ended (however it ended)."""

    def __init__(self) -> None:
        self._running: dict[str, _Running] = {}

    def running(self, tenant_id: str, algorithms: Sequence[str] | None) -> TrainingJob | None:
        """The tenant's running job that trains any of ``algorithms``, as ``running``."""
        for job_id in [key for key, entry in self._running.items() if entry.done()]:
            del self._running[job_id]
        wanted = _covered(algorithms)
        for entry in self._running.values():
            if entry.job.tenant_id == tenant_id and _overlap(entry.algorithms, wanted):
                return dataclasses.replace(entry.job, status="running")
        return None

    def add(
        self, job: TrainingJob, algorithms: Sequence[str] | None, done: Callable[[], bool]
    ) -> None:
        """Call with no await between it and ``running``: the check and the claim are one."""
        self._running[job.job_id] = _Running(job, _covered(algorithms), done)
