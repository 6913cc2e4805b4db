"""Replicas of a node share one mapped copy of a model version, and report what they hold."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from cluster import operations as ops
from deployments.engine import Engine
from recommend.model_cache import (
    MIB,
    MODEL_CACHE_DIR,
    ArtifactModelSource,
    MemoryModelSource,
    ModelMemory,
    model_id,
)
from storage.artifacts import ArtifactStore
from storage.errors import NotFound
from storage.metrics import PrometheusBackend, use_backend
from storage.settings import Settings
from training.algorithms import create
from training.data import InteractionMatrix
from training.pipeline import train_tenant_async

DOMAIN = "mapped.example"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, str, str]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("mapped"), env="test")

    async def prepare() -> tuple[str, str]:
        tenant = await ops.create_tenant(settings, domain=DOMAIN)
        await ops.ingest_synthetic(
            settings, domain=DOMAIN, users=60, items=40, clusters=4, per_user=8, seed=3
        )
        result = await train_tenant_async(settings, str(tenant.id), ["ease"], evaluate=False)
        return str(tenant.id), result.versions["ease"]

    tenant, version = asyncio.run(prepare())
    return settings, tenant, version


def _file(array: np.ndarray) -> str | None:
    while array is not None:
        if isinstance(array, np.memmap):
            return str(array.filename)
        array = array.base if isinstance(array.base, np.ndarray) else None
    return None


def test_two_replicas_map_one_downloaded_copy(
    trained: tuple[Settings, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, tenant, version = trained
    downloads: list[str] = []
    real = ArtifactStore.load

    def counted(self, tenant_id, algorithm, version_, local_dir):  # type: ignore[no-untyped-def]
        downloads.append(version_)
        return real(self, tenant_id, algorithm, version_, local_dir)

    monkeypatch.setattr(ArtifactStore, "load", counted)
    first = ArtifactModelSource(settings).load(tenant, "ease", version)
    second = ArtifactModelSource(settings).load(tenant, "ease", version)

    assert downloads == [version]
    copy = settings.data_dir.resolve() / MODEL_CACHE_DIR / tenant / "ease" / version
    assert _file(first.weights) == _file(second.weights)
    assert _file(first.weights) is not None and Path(_file(first.weights)).is_relative_to(copy)
    assert first.recommend_many(["user-00001@imported.recserve"], 5) == second.recommend_many(
        ["user-00001@imported.recserve"], 5
    )
    # nothing half-downloaded is left beside the copy
    assert [p.name for p in copy.parent.iterdir()] == [version]


def test_a_missing_version_leaves_no_copy(trained: tuple[Settings, str, str]) -> None:
    settings, tenant, _ = trained
    with pytest.raises(NotFound):
        ArtifactModelSource(settings).load(tenant, "ease", "v999999")
    root = settings.data_dir.resolve() / MODEL_CACHE_DIR / tenant / "ease"
    assert not (root / "v999999").exists()
    assert not [p for p in root.iterdir() if p.name.startswith(".")]


class _Sized:
    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes


def test_models_are_evicted_by_bytes_least_recently_used_first() -> None:
    memory = ModelMemory(max_bytes=100, max_models=10)
    assert memory.put("t1:v1", _Sized(40)) == []
    assert memory.put("t2:v1", _Sized(40)) == []
    assert memory.get("t1:v1") is not None  # t1 is now the most recently used
    assert memory.put("t3:v1", _Sized(40)) == ["t2:v1"]  # 120 bytes > 100: t2 goes, not t1
    assert list(memory.sizes()) == ["t1:v1", "t3:v1"]
    assert memory.get("t2:v1") is None


def test_the_count_cap_still_applies_and_one_oversized_model_stays() -> None:
    memory = ModelMemory(max_bytes=None, max_models=2)
    memory.put("a:v1", _Sized(1))
    memory.put("b:v1", _Sized(1))
    assert memory.put("c:v1", _Sized(1)) == ["a:v1"]
    tight = ModelMemory(max_bytes=10, max_models=4)
    tight.put("a:v1", _Sized(5))
    assert tight.put("big:v1", _Sized(50)) == ["a:v1"]  # alone over budget: it still serves
    assert tight.sizes() == {"big:v1": 50}


def _ease(seed: int) -> object:
    rng = np.random.default_rng(seed)
    matrix = (rng.random((30, 20)) < 0.3).astype(np.float32)
    data = InteractionMatrix(
        sp.csr_matrix(matrix),
        np.array([f"u{i}" for i in range(30)], dtype=object),
        np.array([f"i{j}" for j in range(20)], dtype=object),
    )
    return create("ease").fit(data)


def test_an_engine_reports_the_bytes_it_holds_until_memory_evicts_them() -> None:
    model, other = _ease(0), _ease(1)
    engine = Engine.func_or_class("ease", source=MemoryModelSource("t1", {}))
    engine.reconfigure({"max_model_mb": (model.nbytes + other.nbytes - 1) / MIB})
    meters = PrometheusBackend()
    previous = use_backend(meters)
    try:
        engine._hold(model_id("ease", "t1", "v1"), model)
        labels = {"tenant_id": "t1", "algorithm": "ease"}
        assert meters.registry.get_sample_value("model_bytes", labels) == model.nbytes > 0
        assert engine.info()["models"] == {"ease/t1:v1": model.nbytes}
        engine._hold(model_id("ease", "t2", "v1"), other)  # together over budget: t1's goes
        assert meters.registry.get_sample_value("model_bytes", labels) == 0.0
        assert engine.info()["models"] == {"ease/t2:v1": other.nbytes}
    finally:
        use_backend(previous)


class _Named(_Sized):
    def __init__(self, algorithm: str, tenant_id: str, version: str) -> None:
        super().__init__(1000)
        self.made = (algorithm, tenant_id, version)


class _PoolSource:
    def load(self, tenant_id: str, algorithm: str, version: str) -> _Named:
        return _Named(algorithm, tenant_id, version)


async def test_a_pool_holds_every_algorithms_models_and_names_each_in_metrics() -> None:
    engine = Engine.func_or_class(["ease", "popularity"], source=_PoolSource())
    engine.reconfigure({"max_models_per_replica": 2})
    assert engine.info()["algorithms"] == ["ease", "popularity"]
    assert engine._memory.max_models == 4  # max_models_per_replica per algorithm of the pool
    meters = PrometheusBackend()
    previous = use_backend(meters)
    try:
        ease = await engine._resident(model_id("ease", "t1", "v1"))
        popular = await engine._resident(model_id("popularity", "t1", "v1"))
        # one (tenant, version), two algorithms: two models, each from its own algorithm
        assert ease.made == ("ease", "t1", "v1") and popular.made == ("popularity", "t1", "v1")
        assert await engine._resident(model_id("ease", "t1", "v1")) is ease  # held
        for algorithm in ("ease", "popularity"):
            labels = {"tenant_id": "t1", "algorithm": algorithm}
            assert meters.registry.get_sample_value("model_bytes", labels) == 1000
            assert meters.registry.get_sample_value("model_version_served", labels) == 1
        with pytest.raises(ValueError, match="asked for als"):
            await engine._resident(model_id("als", "t1", "v1"))  # not one of the pool's
        # One LRU over both algorithms: popularity's model, used least recently, goes first.
        for tenant in ("t2", "t3", "t4"):
            await engine._resident(model_id("ease", tenant, "v1"))
        assert list(engine.info()["models"]) == [
            "ease/t1:v1",
            "ease/t2:v1",
            "ease/t3:v1",
            "ease/t4:v1",
        ]
        labels = {"tenant_id": "t1", "algorithm": "popularity"}
        assert meters.registry.get_sample_value("model_bytes", labels) == 0.0
    finally:
        use_backend(previous)


async def test_small_scoring_stays_on_the_loop_and_large_goes_to_a_thread() -> None:
    """A thread handoff costs more than scoring one user of a small catalogue; a big batch must
    not hold the replica's event loop."""
    import threading

    from recommend.scoring import INLINE_SCORES, scored

    class Sized:
        def __init__(self, n_items: int) -> None:
            self.n_items = n_items

    loop_thread = threading.get_ident()
    small = await scored(Sized(1_682), 1, threading.get_ident)
    large = await scored(Sized(INLINE_SCORES), 2, threading.get_ident)
    assert small == loop_thread
    assert large != loop_thread


async def test_a_store_trained_again_from_empty_is_not_served_from_the_old_copy(
    tmp_path: Path,
) -> None:
    """An emptied artifact store reuses version names: the node's copy of the old v000001 must
    not be served as the new v000001."""
    settings = Settings(data_dir=tmp_path, env="test")
    tenant = str((await ops.create_tenant(settings, domain="again.example")).id)
    await ops.ingest_synthetic(
        settings, domain="again.example", users=40, items=30, clusters=3, per_user=6, seed=5
    )
    version = (await train_tenant_async(settings, tenant, ["popularity"])).versions["popularity"]
    old = ArtifactModelSource(settings).load(tenant, "popularity", version)
    shutil.rmtree(Path(settings.artifact_uri) / tenant)
    await ops.ingest_synthetic(
        settings, domain="again.example", users=40, items=30, clusters=3, per_user=6, seed=6
    )
    again = await train_tenant_async(settings, tenant, ["popularity"], evaluate=False)
    assert again.versions["popularity"] == version  # the same name, another model
    new = ArtifactModelSource(settings).load(tenant, "popularity", version)
    assert new.user_items.nnz > old.user_items.nnz
