"""Test doubles importable on Ray replicas (the test package is on the workers' path)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from storage.errors import NotFound
from training.algorithms.base import Recommender

CURRENT = "CURRENT"


class DirectoryModelSource:
    """A ``ModelSource`` over ``root/{tenant}/{algorithm}/{version}`` and a CURRENT file."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def current_version(self, tenant_id: str, algorithm: str) -> str | None:
        marker = self.root / tenant_id / algorithm / CURRENT
        return marker.read_text().strip() if marker.exists() else None

    def load(self, tenant_id: str, algorithm: str, version: str) -> Recommender:
        directory = self.root / tenant_id / algorithm / version
        if not directory.exists():
            raise NotFound(f"{tenant_id}/{algorithm}/{version}")
        return Recommender.load(directory)

    def publish(self, tenant_id: str, model: Recommender, version: str, *, promote: bool = True):
        directory = self.root / tenant_id / model.name / version
        model.save(directory)
        if promote:
            self.promote(tenant_id, model.name, version)

    def promote(self, tenant_id: str, algorithm: str, version: str) -> None:
        marker = self.root / tenant_id / algorithm / CURRENT
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(version)


@dataclass
class FakeTrainingResult:
    tenant_id: str
    version: str
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)


def fake_train(settings, tenant_id: str, algorithms: list[str] | None) -> FakeTrainingResult:
    """Stands in for ``training.pipeline.train_tenant``; proves the task sees the settings."""
    names = algorithms or ["popularity"]
    return FakeTrainingResult(
        tenant_id=tenant_id,
        version=f"trained-{Path(settings.data_dir).name}",
        metrics={name: {"ndcg@10": 0.5} for name in names},
    )
