"""``recserve models list|promote|rollback`` and ``retrain-due`` on an embedded data dir."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cluster.cli import app
from storage.artifacts import ArtifactStore
from storage.cache import create_cache
from storage.cache.keys import model_epoch
from storage.settings import Settings, get_settings

runner = CliRunner()
DOMAIN = "registry.example"


@pytest.fixture
def trained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setenv("RECSERVE_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    code, out = invoke("tenant", "create", "--domain", DOMAIN)
    assert code == 0, out
    tenant_id = out.strip()
    args = ("--users", "30", "--items", "20", "--per-user", "5")
    assert invoke("ingest", "synthetic", "--tenant", DOMAIN, *args)[0] == 0
    for _ in range(2):
        code, out = invoke("train", "--tenant", DOMAIN, "--algorithms", "popularity")
        assert code == 0, out
    root = tmp_path / "artifacts"
    yield {"tenant_id": tenant_id, "store": ArtifactStore(str(root)), "root": root}
    get_settings.cache_clear()


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), terminal_width=200)
    return result.exit_code, result.output


def _current_line(out: str) -> str:
    return next(line for line in out.splitlines() if "*" in line)


def test_every_version_carries_its_training_metadata(trained: dict) -> None:
    store, tenant_id = trained["store"], trained["tenant_id"]
    meta = store.metadata(tenant_id, "popularity", "v000002")
    assert meta["params"] and meta["counts"]["users"] == 30 and meta["counts"]["events"] > 0
    assert set(meta["metrics"]) >= {"ndcg@10", "precision@10"}
    assert meta["duration_seconds"] >= meta["fit_seconds"] > 0
    assert meta["code_version"]["package"] == "0.1.0"
    assert len(meta["code_version"]["git_commit"] or "0" * 40) == 40

    code, out = invoke("models", "list", "--tenant", DOMAIN, "--algorithm", "popularity")
    assert code == 0, out
    assert "v000001" in out and "ndcg@10=" in out
    assert "v000002" in _current_line(out)


def test_the_tenants_tuned_hybrid_is_listed_with_its_weights(trained: dict) -> None:
    domain = "tuned.example"
    assert invoke("tenant", "create", "--domain", domain)[0] == 0
    args = ("--users", "80", "--items", "40", "--per-user", "8")
    assert invoke("ingest", "synthetic", "--tenant", domain, *args)[0] == 0
    code, out = invoke("train", "--tenant", domain, "--algorithms", "ease,popularity")
    assert code == 0, out
    code, out = invoke("models", "list", "--tenant", domain)
    assert code == 0, out
    [line] = [line for line in out.splitlines() if "hybrid" in line]
    assert "v000001" in line and "*" in line and "ease=" in line


def test_promote_and_rollback_move_the_served_version(trained: dict) -> None:
    store, tenant_id = trained["store"], trained["tenant_id"]
    code, out = invoke(
        "models", "promote", "--tenant", DOMAIN, "--algorithm", "popularity", "--version", "v000001"
    )
    assert code == 0, out
    assert store.current(tenant_id, "popularity") == "v000001"
    code, out = invoke("models", "rollback", "--tenant", DOMAIN, "--algorithm", "popularity")
    assert code == 0, out
    assert "v000002" in out and store.current(tenant_id, "popularity") == "v000002"


def test_promoting_a_half_written_version_is_refused(trained: dict) -> None:
    store, tenant_id = trained["store"], trained["tenant_id"]
    half = trained["root"] / tenant_id / "popularity" / "v000003"  # files, no COMPLETE marker
    half.mkdir()
    (half / "arrays.npz").write_bytes(b"partial upload")
    code, out = invoke(
        "models", "promote", "--tenant", DOMAIN, "--algorithm", "popularity", "--version", "v000003"
    )
    assert code == 1 and "does not exist" in " ".join(out.split())
    assert store.current(tenant_id, "popularity") == "v000002"
    code, out = invoke("models", "list", "--tenant", DOMAIN)
    assert "v000003" not in out


@pytest.mark.services
def test_promotion_is_announced_on_the_models_channel(trained: dict, redis_url: str) -> None:
    from storage.model_registry import promote

    settings = Settings(redis_url=redis_url)
    channel = f"models:{trained['tenant_id']}"  # a fresh tenant id: no clash with other runs

    async def promote_and_listen() -> tuple[str, dict] | None:
        cache = create_cache(settings)
        subscription = await cache.subscribe(channel)
        try:
            epoch = await model_epoch(cache, trained["tenant_id"])
            await promote(settings, trained["tenant_id"], "popularity", "v000001")
            # cached results of the old version are keyed by the old epoch: never read again
            assert await model_epoch(cache, trained["tenant_id"]) == epoch + 1
            return await subscription.get(wait_seconds=5)
        finally:
            await subscription.aclose()
            await cache.close()

    got = asyncio.run(promote_and_listen())
    assert got == (
        channel,
        {"tenant_id": trained["tenant_id"], "versions": {"popularity": "v000001"}},
    )


def test_retrain_due_trains_only_tenants_past_their_policy(trained: dict) -> None:
    code, out = invoke("retrain-due", "--algorithms", "popularity")
    assert code == 0, out
    assert DOMAIN not in out  # no interaction arrived since the last training

    assert invoke("tenant", "create", "--domain", "fresh.example")[0] == 0
    args = ("--users", "10", "--items", "8", "--per-user", "3")
    assert invoke("ingest", "synthetic", "--tenant", "fresh.example", *args)[0] == 0
    code, out = invoke("retrain-due", "--algorithms", "popularity")
    assert code == 0 and "fresh.example" not in out  # 30 interactions: too few to start
    # another seed: new events (the same file again would add none, imports are idempotent)
    more = ("--seed", "7")
    assert invoke("ingest", "synthetic", "--tenant", "fresh.example", *args, *more)[0] == 0
    code, out = invoke("retrain-due", "--algorithms", "popularity")
    assert code == 0, out
    assert "fresh.example: never trained -> trained popularity=v000001" in out
    assert DOMAIN not in out
    [job] = asyncio.run(_jobs("fresh.example"))  # recorded like the app's scheduled jobs
    assert (job.status, job.trigger, job.reason) == (
        "succeeded",
        "scheduler",
        "recserve retrain-due",
    )
    assert job.progress == {"popularity": {"state": "succeeded"}}
    code, out = invoke("retrain-due", "--algorithms", "popularity")
    assert "fresh.example" not in out  # trained now: nothing new since


async def _jobs(domain: str) -> list:
    from storage import repositories as repo
    from storage.db import Database
    from storage.repositories import jobs as jobs_repo

    database = Database.from_settings(get_settings())
    try:
        async with database.session() as session:
            tenant = await repo.get_tenant_by_domain(session=session, domain=domain)
            return list(await jobs_repo.list_jobs(session=session, tenant_id=tenant.id))
    finally:
        await database.dispose()
