"""``recserve models list|promote|rollback`` and ``recserve retrain-due``.

The registry itself lives in ``storage.model_registry``; here the domain given on the command
line is turned into the tenant id, and results are printed.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from cluster.lazy import lazy_module
from storage.artifacts import create_artifact_store
from storage.settings import Settings, get_settings

if TYPE_CHECKING:
    from jobs.ledger import TrainingJob
    from jobs.scheduler import Outcome

ops = lazy_module("cluster.operations")

models_app = typer.Typer(help="List, promote and roll back a tenant's model versions.")
TenantOption = Annotated[str, typer.Option("--tenant", help="The tenant's domain.")]
AlgorithmOption = Annotated[str, typer.Option("--algorithm", help="e.g. als, ease, content")]


async def tenant_id_of(settings: Settings, domain: str) -> str:
    database = await ops.open_database(settings)
    try:
        return str((await ops.tenant_by_domain(database, domain)).id)
    finally:
        await database.dispose()


def _metrics_text(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.3f}" for k, v in sorted(metrics.items()))


@models_app.command("list")
def list_command(
    tenant: TenantOption,
    algorithm: Annotated[str | None, typer.Option(help="Only this algorithm")] = None,
) -> None:
    """Every version with its creation time and holdout metrics; '*' marks the served one."""
    from cluster.cli import console, run
    from storage.model_registry import list_models, trained_algorithms
    from training.algorithms import ALGORITHMS
    from training.hybrid import HYBRID

    settings = get_settings()
    tenant_id = run(tenant_id_of(settings, tenant))
    store = create_artifact_store(settings)
    # the tenant's tuned hybrid blend (its weights in the metrics column) beside the engines
    known = [*ALGORITHMS, HYBRID]
    names = [algorithm] if algorithm else trained_algorithms(store, tenant_id, known)
    rows = run(asyncio.to_thread(list_models, store, tenant_id, names))
    table = Table("algorithm", "version", "current", "created_at", "seconds", "fit", "metrics")
    for row in rows:
        seconds = f"{row.duration_seconds:.2f}" if row.duration_seconds is not None else ""
        table.add_row(
            row.algorithm,
            row.version,
            "*" if row.current else "",
            row.created_at or "",
            seconds,
            row.fit,
            _metrics_text(row.metrics),
        )
    console.print(table)


@models_app.command("promote")
def promote_command(
    tenant: TenantOption,
    algorithm: AlgorithmOption,
    version: Annotated[str, typer.Option("--version", help="e.g. v000003")],
) -> None:
    """Serve this version from the next request on (a half-written version is refused)."""
    from cluster.cli import console, run
    from storage.model_registry import promote

    settings = get_settings()

    async def go() -> str:
        return await promote(settings, await tenant_id_of(settings, tenant), algorithm, version)

    console.print(f"{algorithm} {run(go())} is current")


@models_app.command("rollback")
def rollback_command(tenant: TenantOption, algorithm: AlgorithmOption) -> None:
    """Serve the previously promoted version again."""
    from cluster.cli import console, run
    from storage.model_registry import rollback

    settings = get_settings()

    async def go() -> str:
        return await rollback(settings, await tenant_id_of(settings, tenant), algorithm)

    console.print(f"{algorithm} rolled back to {run(go())}")


def retrain_due_command(
    loop: Annotated[
        float | None, typer.Option(help="Check again every this many seconds, until Ctrl-C")
    ] = None,
    algorithms: Annotated[str | None, typer.Option(help="Comma-separated, default: all")] = None,
    address: Annotated[
        str | None,
        typer.Option(
            help="Ray cluster (e.g. auto) on which ALS and SVD of tenants past "
            "RECSERVE_TRAIN_DISTRIBUTED_MIN_INTERACTIONS fit with Ray Train (default: never)"
        ),
    ] = None,
) -> None:
    """Train every tenant whose retraining policy says it is due.

    Each run is a training job recorded like the app's (``trainingJobs``): a tenant already
    training (started by the app's scheduler or ``trainModel``) is not trained twice."""
    from cluster.cli import console, run

    settings = get_settings()
    names = [a.strip() for a in algorithms.split(",")] if algorithms else None
    while True:
        for outcome in run(retrain_round(settings, names, address)):
            due = outcome.due
            console.print(f"{due.domain}: {due.reason} -> {_outcome_text(outcome)}")
        if loop is None:
            return
        time.sleep(loop)


async def retrain_round(
    settings: Settings, algorithms: list[str] | None, address: str | None
) -> list[Outcome]:
    """One round of the retraining scheduler in this process, each job awaited in turn."""
    from jobs.ledger import JobLedger
    from jobs.runners import ThreadJobs
    from jobs.scheduler import Scheduler
    from recommend.options import TRAIN_ENTRYPOINT

    ledger = JobLedger(settings)
    jobs = ThreadJobs(ledger, TRAIN_ENTRYPOINT, address=address)
    scheduler = Scheduler(jobs, ledger.database, algorithms=algorithms)
    try:
        return await scheduler.round(reason="recserve retrain-due", finish=jobs.wait)
    finally:
        await jobs.close()
        await ledger.close()


def _outcome_text(outcome: Outcome) -> str:
    if outcome.job is None:
        return f"[red]not started:[/red] {outcome.error}"
    return _job_text(outcome.job)


def _job_text(outcome: TrainingJob) -> str:
    if outcome.status == "failed":
        return f"[red]failed:[/red] {outcome.error} (job {outcome.job_id})"
    if outcome.status != "succeeded":
        return f"already training (job {outcome.job_id}, {outcome.status})"
    label = outcome.model_version or ""
    if "=" not in label:
        label = ",".join(f"{name}={label}" for name in outcome.algorithms)
    return f"trained {label}"
