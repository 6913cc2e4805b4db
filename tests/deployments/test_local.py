"""The single-process recommender: same answers as the engines, no Ray."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from deployments.local import LocalRecommender
from graph_api.recommender import RecommendationRequest
from storage.settings import Settings
from tests.deployments.fakes import synthetic_matrix
from training.algorithms import Recommender, create

TENANT = "acme"


class MemorySource:
    """A ``ModelSource`` over fitted models; ``broken`` engines raise on load."""

    def __init__(self, names: list[str], broken: tuple[str, ...] = ()) -> None:
        matrix = synthetic_matrix(hot=5)
        self.models = {name: create(name).fit(matrix) for name in names if name not in broken}
        self.broken = broken
        self.loads: list[str] = []

    def current_version(self, tenant_id: str, algorithm: str) -> str | None:
        if tenant_id != TENANT or (algorithm not in self.models and algorithm not in self.broken):
            return None
        return "v1"

    def load(self, tenant_id: str, algorithm: str, version: str) -> Recommender:
        self.loads.append(algorithm)
        if algorithm in self.broken:
            raise OSError(f"{algorithm} artifact is corrupt")
        return self.models[algorithm]


def recommender(source: MemorySource, tmp_path: Path) -> LocalRecommender:
    engines = ["popularity", "item_knn", "ease", "als"]
    return LocalRecommender(Settings(data_dir=tmp_path), engines, source=source)


def request(**fields) -> RecommendationRequest:
    return RecommendationRequest(**({"tenant_id": TENANT, "user_id": "u1", "k": 5} | fields))


@pytest.fixture
def source() -> MemorySource:
    return MemorySource(["popularity", "item_knn", "ease"], broken=("als",))


async def test_hybrid_blends_and_drops_the_broken_engine(
    source: MemorySource, tmp_path: Path
) -> None:
    reply = await recommender(source, tmp_path).recommend(request(explain=True))
    assert set(reply.engines_used) == {"popularity", "item_knn", "ease"}
    assert reply.engines_failed == ["als"]
    assert len(reply.items) == 5 and reply.items[0].reason
    ease = source.models["ease"]
    seen = set(ease.item_ids[ease.user_items[ease.user_index("u1")].indices])
    assert seen.isdisjoint(item.item_id for item in reply.items)


async def test_single_engine_matches_the_model(source: MemorySource, tmp_path: Path) -> None:
    local = recommender(source, tmp_path)
    reply = await local.recommend(request(algorithm="ease"))
    expected = [item for item, _ in source.models["ease"].recommend("u1", 5)]
    assert [item.item_id for item in reply.items] == expected
    assert reply.model_version == "v1"


async def test_cold_user_and_untrained_tenant(source: MemorySource, tmp_path: Path) -> None:
    local = recommender(source, tmp_path)
    cold = await local.recommend(request(user_id="stranger", algorithm="item_knn"))
    assert cold.engines_used == ["popularity"] and cold.items[0].item_id == "i5"
    nobody = await local.recommend(request(tenant_id="nobody"))
    assert nobody.items == [] and nobody.engines_used == []


async def test_concurrent_first_requests_load_each_model_once(
    source: MemorySource, tmp_path: Path
) -> None:
    local = recommender(source, tmp_path)
    users = [f"u{u}" for u in range(10)]
    await asyncio.gather(*(local.recommend(request(user_id=u, algorithm="ease")) for u in users))
    assert source.loads.count("ease") == 1


async def test_similar_items_and_trending(source: MemorySource, tmp_path: Path) -> None:
    local = recommender(source, tmp_path)
    similar = await local.similar_items(tenant_id=TENANT, item_id="i1", k=4)
    assert len(similar) == 4 and all(int(item[1:]) < 20 for item, _ in similar)
    top = await local.trending(tenant_id=TENANT, category="b", limit=3)
    assert len(top) == 3 and all(int(item[1:]) >= 20 for item, _ in top)
    assert await local.trending(tenant_id="nobody", category=None, limit=3) == []


async def test_training_runs_in_process_and_invalidates_versions(
    source: MemorySource, tmp_path: Path
) -> None:
    local = LocalRecommender(
        Settings(data_dir=tmp_path),
        ["ease"],
        source=source,
        train_entrypoint="tests.deployments.fakes:fake_train",
    )
    job = await local.train(tenant_id=TENANT, algorithms=["ease"])
    assert job.status == "succeeded" and job.algorithms == ["ease"]
    assert job.model_version == f"trained-{tmp_path.name}"
    assert job.metrics == {"ease": {"ndcg@10": 0.5}}
