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
from graph_api.schema import printed_sdl
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


def _events_csv(path: Path, extra: str = "") -> Path:
    path.write_text(
        "customer,sku,event,ts\n"
        "u1,a,view,1700000000\n"
        "u1,b,purchase,1700000100\n"
        "u2,a,click,2024-01-01T00:00:00Z\n" + extra
    )
    return path


def test_ingest_file_reports_bad_rows_and_is_idempotent(data_dir: Path) -> None:
    assert invoke("tenant", "create", "--domain", "files.example")[0] == 0
    items = data_dir / "items.csv"
    items.write_text("sku,name\na,Apple\nb,Banana\n")
    events = _events_csv(data_dir / "events.csv", "u3,zz,view,1700000200\nu3,a,view,never\n")
    args = (
        "ingest", "file", "--tenant", "files.example", "--items", str(items),
        "--interactions", str(events), "--map", "user=customer,item=sku,type=event,time=ts",
        "--map", "external_id=sku,title=name",
    )  # fmt: skip
    code, out = invoke(*args, "--strict")  # the checking pass finds the unreadable time
    assert code == 1 and "nothing imported: 1 bad rows" in out
    assert "events.csv:6: time must be" in out
    _events_csv(events, "u3,zz,view,1700000200\n")  # the import finds the unknown item
    code, out = invoke(*args, "--strict")
    assert code == 1 and "events.csv:5: unknown item 'zz'" in out
    assert _counts(data_dir, "files.example") == (0, 0)
    _events_csv(events, "u3,zz,view,1700000200\nu3,a,view,never\n")

    code, out = invoke(*args)
    assert code == 0, out
    assert "imported 2 items" in out and "3 interactions (0 already present)" in out
    assert "2 bad rows skipped" in out and "events.csv:5: unknown item 'zz'" in out
    code, out = invoke(*args)
    assert code == 0 and "0 interactions (3 already present)" in out
    assert _counts(data_dir, "files.example") == (2, 3)

    code, out = invoke(*args[:-2], "--map", "colour=c")
    assert code == 1 and "bad mapping 'colour=c'" in out and "Traceback" not in out
    code, out = invoke("ingest", "file", "--tenant", "files.example", "--items", "nope.csv")
    assert code == 2  # a missing file is a usage error


def test_export_imports_into_another_tenant(data_dir: Path) -> None:
    assert invoke("tenant", "create", "--domain", "from.example")[0] == 0
    assert invoke("tenant", "create", "--domain", "to.example")[0] == 0
    code, out = invoke(
        "ingest", "synthetic", "--tenant", "from.example", "--users", "20", "--items", "15",
        "--per-user", "4",
    )  # fmt: skip
    assert code == 0, out
    for file_format in ("parquet", "jsonl"):
        out_dir = data_dir / f"export-{file_format}"
        code, out = invoke(
            "export", "--tenant", "from.example", "--out", str(out_dir), "--format", file_format
        )
        assert code == 0, out
        files = {kind: out_dir / f"{kind}.{file_format}" for kind in
                 ("items", "users", "interactions", "ratings")}  # fmt: skip
        assert all(path.is_file() for path in files.values())
        code, out = invoke(
            "ingest", "file", "--tenant", "to.example",
            *(arg for kind, path in files.items() for arg in (f"--{kind}", str(path))),
        )  # fmt: skip
        assert code == 0, out
    assert _counts(data_dir, "to.example") == _counts(data_dir, "from.example")
    code, out = invoke("export", "--tenant", "to.example", "--out", "x", "--format", "xml")
    assert code == 2


def _counts(data_dir: Path, domain: str) -> tuple[int, int]:
    """(items, interactions) of the tenant."""

    async def count() -> tuple[int, int]:
        database = Database(Settings(data_dir=data_dir).database_url or "")
        try:
            async with database.session() as session:
                tenant = await repo.get_tenant_by_domain(session=session, domain=domain)
                items = await repo.list_items(session=session, tenant_id=tenant.id, limit=1000)
                events = await repo.count_interactions(session=session, tenant_id=tenant.id)
            return len(items), events
        finally:
            await database.dispose()

    return asyncio.run(count())


def test_the_operator_moves_a_tenant_to_another_tier(data_dir: Path) -> None:
    assert invoke("tenant", "create", "--domain", "grow.example")[0] == 0
    assert _tenant(data_dir, "grow.example")[0].tier == "basic"
    code, out = invoke("tenant", "set-tier", "--tenant", "grow.example", "--tier", "enterprise")
    assert code == 0 and "tier enterprise" in out, out
    assert _tenant(data_dir, "grow.example")[0].tier == "enterprise"
    code, out = invoke("token", "--tenant", "grow.example", "--email", "ops@grow.example")
    assert TokenService(Settings(data_dir=data_dir)).verify(out.strip()).tier == "enterprise"
    assert invoke("tenant", "set-tier", "--tenant", "grow.example", "--tier", "gold")[0] == 2
    code, out = invoke("tenant", "set-tier", "--tenant", "none.example", "--tier", "premium")
    assert code == 1 and "not found" in out


def test_schema_writes_the_sdl_and_check_finds_a_stale_file(tmp_path: Path) -> None:
    target = tmp_path / "schema.graphql"
    code, out = invoke("schema", "--output", str(target))
    assert code == 0, out
    assert target.read_text() == printed_sdl()
    assert invoke("schema", "--check", "--output", str(target))[0] == 0
    target.write_text(target.read_text().replace("type Query", "type Querry"))
    code, out = invoke("schema", "--check", "--output", str(target))
    assert code == 1 and "recserve schema" in out


def test_a_tenants_rating_scale_is_set_shown_and_used_by_imports(
    data_dir: Path, tmp_path: Path
) -> None:
    code, out = invoke("tenant", "create", "--domain", "pct.example", "--rating-scale", "1:100")
    assert code == 0, out
    code, out = invoke("tenant", "show", "--tenant", "pct.example")
    assert code == 0 and "rating scale  1:100" in out, out
    code, out = invoke("tenant", "create", "--domain", "bad.example", "--rating-scale", "ten")
    assert code == 1 and "rating scale 'ten'" in out and "Traceback" not in out, out
    items = tmp_path / "items.csv"
    items.write_text("external_id,title\na,A\n")
    ratings = tmp_path / "ratings.csv"
    ratings.write_text("user,item,rating,time\nu1,a,8,1700000000\nu2,a,9.5,1700000000\n")
    args = ("--tenant", "pct.example", "--items", str(items), "--ratings", str(ratings))
    code, out = invoke("ingest", "file", *args, "--rating-scale", "0:10", "--strict")
    assert code == 0 and "2 ratings" in out, out  # 8 and 9.5 fit 0:10, which is now the tenant's
    code, out = invoke("tenant", "show", "--tenant", "pct.example")
    assert "rating scale  0:10" in out, out
    code, out = invoke("tenant", "set-rating-scale", "--tenant", "pct.example", "thumbs")
    assert code == 0 and "ratings on thumbs (0 down, 1 up)" in out, out
    ratings.write_text("user,item,rating,time\nu3,a,1,1700000000\nu4,a,3,1700000000\n")
    code, out = invoke("ingest", "file", *args)
    assert "u3" not in out and "ratings.csv:3: rating 3 is outside" in out, out


def test_the_cli_imports_what_a_command_needs_only() -> None:
    """`recserve serve` stays resident beside the app it supervises: importing the CLI must not
    bring the ingest, training or GraphQL stacks (~100 MiB), which load on first use."""
    import subprocess
    import sys

    probe = (
        "import sys, cluster.cli\n"
        "heavy = ['numpy', 'scipy', 'pyarrow', 'strawberry', 'cluster.status', 'graph_api']\n"
        "print([m for m in heavy if m in sys.modules])\n"
        "print(type(sys.modules['cluster.operations']).__name__)"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split()
    assert found == ["[]", "_LazyModule"], found  # cluster.operations: not executed yet
