"""``recserve status`` parts: Serve's status as rows, promoted versions per tenant, the report."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from typer.testing import CliRunner

from cluster.cli import app
from cluster.status import StatusReport, fetch_health, model_versions, render, serve_rows
from storage import repositories as repo
from storage.artifacts import ArtifactStore
from storage.db import Database, migrate


def fake_serve_status() -> SimpleNamespace:
    # The shape of ray.serve.schema.ServeStatus: applications -> deployments -> replica_states.
    ingress = SimpleNamespace(
        status=SimpleNamespace(value="HEALTHY"), replica_states={"RUNNING": 2}, message=""
    )
    ease = SimpleNamespace(
        status=SimpleNamespace(value="UPDATING"),
        replica_states={"RUNNING": 1, "STARTING": 1},
        message="scaling up",
    )
    app = SimpleNamespace(
        status=SimpleNamespace(value="RUNNING"),
        deployments={"ingress": ingress, "engine_ease": ease},
    )
    return SimpleNamespace(applications={"recserve": app})


def test_serve_status_becomes_rows() -> None:
    applications, rows = serve_rows(fake_serve_status())
    assert applications == {"recserve": "RUNNING"}
    assert [(r.deployment, r.status, r.replicas) for r in rows] == [
        ("engine_ease", "UPDATING", {"RUNNING": 1, "STARTING": 1}),
        ("ingress", "HEALTHY", {"RUNNING": 2}),
    ]


async def test_model_versions_per_tenant(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/s.db"
    await migrate(url)
    database = Database(url)
    artifacts = ArtifactStore(str(tmp_path / "artifacts"))
    try:
        async with database.session() as session:
            trained = await repo.create_tenant(session=session, name="A", domain="a.example")
            await repo.create_tenant(session=session, name="B", domain="b.example")
            await session.commit()
        model_dir = tmp_path / "model"
        model_dir.mkdir()
        (model_dir / "weights.npy").write_bytes(b"\0")
        for _ in range(2):
            version = artifacts.new_version(str(trained.id), "ease")
            artifacts.save(str(trained.id), "ease", version, model_dir, {})
        artifacts.promote(str(trained.id), "ease", "v000001")
        found = await model_versions(database, artifacts)
    finally:
        await database.dispose()
    assert found == {"a.example": {"ease": "v000001"}, "b.example": {}}


def test_report_lines_name_every_part() -> None:
    applications, rows = serve_rows(fake_serve_status())
    report = StatusReport(
        applications,
        rows,
        {"a.example": {"ease": "v000003", "als": "v000002"}, "b.example": {}},
        {"status": "degraded", "checks": {"database": "ok", "cache": "unavailable"}},
    )
    text = "\n".join(render(report))
    assert "recserve: RUNNING" in text
    assert "engine_ease" in text and "STARTING=1" in text and "scaling up" in text
    assert "a.example: als=v000002 ease=v000003" in text
    assert "b.example: (untrained)" in text
    assert "Health: degraded" in text and "cache: unavailable" in text


def test_unreachable_ingress_is_reported_not_raised() -> None:
    assert fetch_health("http://127.0.0.1:1", timeout_s=0.5)["status"] == "unreachable"


def test_manifests_command_checks_freshness() -> None:
    result = CliRunner().invoke(app, ["manifests", "--check"])
    assert result.exit_code == 0, result.output
