"""The command line, end to end on an embedded data dir."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cluster.cli import app
from graph_api.auth import TokenService
from storage.settings import Settings, get_settings

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RECSERVE_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_tenant_ingest_train_and_token(data_dir: Path) -> None:
    code, out = invoke("tenant", "create", "--domain", "shop.example", "--tier", "premium")
    assert code == 0, out
    tenant_id = uuid.UUID(out.strip())

    code, out = invoke(
        "ingest",
        "synthetic",
        "--tenant",
        "shop.example",
        "--users",
        "40",
        "--items",
        "30",
        "--per-user",
        "6",
    )
    assert code == 0, out
    assert "ingested 30 items, 40 users" in out

    code, out = invoke("train", "--tenant", "shop.example", "--algorithms", "popularity,ease")
    assert code == 0, out
    assert "ease" in out and "v000001" in out
    assert (data_dir / "artifacts" / str(tenant_id) / "ease").is_dir()

    code, out = invoke(
        "token", "--tenant", "shop.example", "--email", "ops@shop.example", "--admin"
    )
    assert code == 0, out
    principal = TokenService(Settings(data_dir=data_dir)).verify(out.strip())
    assert principal.tenant_id == tenant_id
    assert principal.role == "admin" and principal.tier == "premium"


def test_errors_are_messages_not_tracebacks(data_dir: Path) -> None:
    assert invoke("tenant", "create", "--domain", "dup.example")[0] == 0
    code, out = invoke("tenant", "create", "--domain", "dup.example")
    assert code == 1 and "error:" in out and "Traceback" not in out
    code, out = invoke("token", "--tenant", "missing.example", "--email", "a@b.c")
    assert code == 1 and "not found" in out
    code, out = invoke("train", "--tenant", "dup.example", "--algorithms", "nope")
    assert code == 1 and "unknown algorithms" in out
    code, out = invoke("tenant", "create", "--domain", "x.example", "--tier", "gold")
    assert code == 2


def test_migrate_creates_the_embedded_database(data_dir: Path) -> None:
    code, out = invoke("migrate")
    assert code == 0, out
    assert (data_dir / "recserve.db").exists()
