"""The command line, end to end on an embedded data dir."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cluster.cli import app
from graph_api.auth import TokenService
from storage import repositories as repo
from storage.db import Database
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


def _tenant(data_dir: Path, domain: str) -> Any:
    async def read() -> Any:
        database = Database.from_settings(Settings(data_dir=data_dir))
        try:
            async with database.session() as session:
                tenant = await repo.get_tenant_by_domain(session=session, domain=domain)
                users = await repo.list_users(session=session, tenant_id=tenant.id)
                return tenant, {user.email: user.is_active for user in users}
        finally:
            await database.dispose()

    return asyncio.run(read())


def test_tenants_are_created_closed_and_registration_is_chosen(data_dir: Path) -> None:
    assert invoke("tenant", "create", "--domain", "shut.example")[0] == 0
    assert _tenant(data_dir, "shut.example")[0].registration == "closed"
    code, out = invoke("tenant", "create", "--domain", "club.example", "--registration", "invite")
    assert code == 0, out
    assert _tenant(data_dir, "club.example")[0].registration == "invite"
    code, out = invoke(
        "tenant", "set-registration", "--tenant", "shut.example", "--registration", "open"
    )
    assert code == 0 and "registration open" in out, out
    assert _tenant(data_dir, "shut.example")[0].registration == "open"
    code, out = invoke(
        "tenant", "set-registration", "--tenant", "shut.example", "--registration", "anyone"
    )
    assert code == 2


def test_users_and_tenants_are_deactivated_by_the_operator(data_dir: Path) -> None:
    assert invoke("tenant", "create", "--domain", "ops.example")[0] == 0
    assert invoke("token", "--tenant", "ops.example", "--email", "u@ops.example")[0] == 0
    code, out = invoke("user", "deactivate", "--tenant", "ops.example", "--email", "u@ops.example")
    assert code == 0 and "deactivated" in out, out
    assert _tenant(data_dir, "ops.example")[1] == {"u@ops.example": False}
    code, out = invoke("user", "activate", "--tenant", "ops.example", "--email", "U@ops.example")
    assert code == 0, out
    assert _tenant(data_dir, "ops.example")[1] == {"u@ops.example": True}
    assert invoke("tenant", "deactivate", "--tenant", "ops.example")[0] == 0
    assert _tenant(data_dir, "ops.example")[0].is_active is False
    code, out = invoke("user", "deactivate", "--tenant", "ops.example", "--email", "no@ops.example")
    assert code == 1 and "not found" in out
