"""Shared test data and doubles; importable on Ray workers (tests/ is on their path)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.data import InteractionMatrix, ItemInfo

N_USERS, N_ITEMS = 60, 40


def synthetic_matrix(seed: int = 7, *, hot: int | None = None) -> InteractionMatrix:
    """Two taste clusters (items 0-19 "a", 20-39 "b"); ``hot`` gets everyone's purchase."""
    rng = np.random.default_rng(seed)
    items = [
        ItemInfo(id=f"i{j}", title=f"Item {j}", category="a" if j < 20 else "b")
        for j in range(N_ITEMS)
    ]
    rows: list[tuple[str, str, str, float | None, float]] = []
    for u in range(N_USERS):
        cluster = 0 if u < N_USERS // 2 else 20
        for j in rng.choice(20, size=8, replace=False):
            rows.append((f"u{u}", f"i{cluster + j}", "click", None, 0.0))
        if hot is not None:
            rows.append((f"u{u}", f"i{hot}", "purchase", None, 0.0))
    return InteractionMatrix.from_interactions(rows, items=items)


@dataclass
class FakeTrainingResult:
    """The fields of ``training.pipeline.TrainingResult`` the combiner reads."""

    tenant_id: str
    versions: dict[str, str]
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)


def fake_train(
    settings: Any, tenant_id: str, algorithms: list[str] | None, **options: Any
) -> FakeTrainingResult:
    """Stands in for ``training.pipeline.train_tenant``; proves the task got the settings, and
    reports each algorithm as the pipeline does."""
    names = algorithms or ["popularity"]
    report = options.get("report")
    for name in names:
        if report is not None:
            report(name, "running", None)
            report(name, "succeeded", None)
    return FakeTrainingResult(
        tenant_id=tenant_id,
        versions={name: f"trained-{Path(settings.data_dir).name}" for name in names},
        metrics={name: {"ndcg@10": 0.5} for name in names},
    )


class FakeResponse:
    """Quacks like a ``DeploymentResponse``: awaitable, cancellable."""

    def __init__(self, value: Any = None, *, delay: float = 0.0, error: Exception | None = None):
        self.value, self.delay, self.error = value, delay, error
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def __await__(self):
        return self._result().__await__()

    async def _result(self) -> Any:
        import asyncio

        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return self.value


class FakeMethod:
    def __init__(self, handle: FakeHandle, name: str) -> None:
        self._handle, self._name = handle, name

    def remote(self, *args: Any) -> FakeResponse:
        self._handle.calls.append((self._name, args[0] if len(args) == 1 else args))
        return FakeResponse(self._handle.answers[self._name])


class FakeHandle:
    """Records calls and answers each method with a canned value."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, Any]] = []

    def __getattr__(self, name: str) -> FakeMethod:
        if name.startswith("_"):
            raise AttributeError(name)
        return FakeMethod(self, name)


async def database_tenant(settings: Any, domain: str = "acme.example") -> str:
    """A tenant row in ``settings``' database (migrated first): training jobs are recorded
    against it. Returns its id as the serving side names tenants."""
    from cluster import operations as ops
    from storage.db import Database, migrate

    await migrate(settings.database_url)
    database = Database.from_settings(settings)
    try:
        tenant, _ = await ops.ensure_tenant(database, domain=domain)
        return str(tenant.id)
    finally:
        await database.dispose()
