"""The combiner answers MMR's and explanations' similarity with models it holds (``NearModels``):
the same numbers as the engine replica, without the round trip, and within its byte budget."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from deployments.combiner import ServeEngines
from recommend.model_cache import BlendCache, MemoryModelSource, NearModels, VersionCache
from recommend.scoring import SimilarityQuery, answer
from tests.deployments.fakes import FakeResponse, synthetic_matrix
from training.algorithms import Recommender, create

TENANT = "acme"


class CountingSource(MemoryModelSource):
    def __init__(self, models: dict[str, Recommender], version: str = "v1") -> None:
        super().__init__(TENANT, models, version=version)
        self.loads: list[tuple[str, str]] = []

    def load(self, tenant_id: str, algorithm: str, version: str) -> Recommender:
        self.loads.append((algorithm, version))
        return super().load(tenant_id, algorithm, version)


class EngineHandle:
    """A deployment handle of one engine: ``options(...).similarity.remote(query)``, counted."""

    def __init__(self, model: Recommender) -> None:
        self.model = model
        self.calls: list[str] = []

    def options(self, **_: Any) -> EngineHandle:
        return self

    @property
    def similarity(self) -> EngineHandle:
        return self

    def remote(self, query: SimilarityQuery) -> FakeResponse:
        self.calls.append("similarity")
        return FakeResponse(answer(self.model, "similarity", query))


@pytest.fixture(scope="module")
def knn() -> Recommender:
    return create("item_knn").fit(synthetic_matrix())


async def settle(near: NearModels) -> None:
    for _ in range(100):
        if not near._loading:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the load never ended")


def test_a_model_is_held_after_its_first_use_and_never_waited_for(knn: Recommender) -> None:
    async def run() -> None:
        source = CountingSource({"item_knn": knn})
        near = NearModels(source, max_bytes=64 * 2**20)
        assert near.get("item_knn", TENANT, "v1") is None  # loading, not waited for
        assert near.get("item_knn", TENANT, "v1") is None
        await settle(near)
        assert near.get("item_knn", TENANT, "v1") is knn
        assert source.loads == [("item_knn", "v1")]  # one load for both first asks

    asyncio.run(run())


def test_a_model_over_the_budget_is_left_to_its_replica(knn: Recommender) -> None:
    async def run() -> None:
        source = CountingSource({"item_knn": knn})
        near = NearModels(source, max_bytes=knn.nbytes - 1)
        near.get("item_knn", TENANT, "v1")
        await settle(near)
        assert near.get("item_knn", TENANT, "v1") is None
        await settle(near)
        assert source.loads == [("item_knn", "v1")]  # refused once, not loaded again
        assert near.held() == {}
        near.resize(knn.nbytes)  # a larger budget (reconfigure) lets it in
        near.get("item_knn", TENANT, "v1")
        await settle(near)
        assert near.get("item_knn", TENANT, "v1") is knn

    asyncio.run(run())


def test_a_zero_budget_holds_nothing_and_loads_nothing(knn: Recommender) -> None:
    async def run() -> None:
        source = CountingSource({"item_knn": knn})
        near = NearModels(source, max_bytes=0)
        assert near.get("item_knn", TENANT, "v1") is None
        await asyncio.sleep(0.05)
        assert source.loads == []

    asyncio.run(run())


def test_a_new_version_replaces_the_old_one(knn: Recommender) -> None:
    async def run() -> None:
        newer = create("item_knn").fit(synthetic_matrix(seed=8))
        source = CountingSource({"item_knn": knn})
        near = NearModels(source, max_bytes=64 * 2**20)
        near.get("item_knn", TENANT, "v1")
        await settle(near)
        source.models, source.version = {"item_knn": newer}, "v2"
        near.get("item_knn", TENANT, "v2")
        await settle(near)
        assert near.get("item_knn", TENANT, "v2") is newer
        assert list(near.held()) == [NearModels.key("item_knn", TENANT, "v2")]

    asyncio.run(run())


def test_the_combiner_answers_similarity_itself_with_the_replicas_numbers(
    knn: Recommender,
) -> None:
    async def run() -> None:
        source = CountingSource({"item_knn": knn})
        handle = EngineHandle(knn)
        versions = VersionCache(source, ttl_seconds=2.0)
        near = NearModels(source, max_bytes=64 * 2**20)
        engines = ServeEngines(
            {"item_knn": handle}, versions, BlendCache(source, versions), near, max_batch=32
        )
        items = tuple(f"i{j}" for j in (0, 3, 7, 21, 25))
        query = SimilarityQuery(items, (*items, "i1", "unknown"))

        remote = await engines.call("item_knn", "similarity", TENANT, "v1", query)
        assert handle.calls == ["similarity"]  # not held yet: the replica answered
        await settle(near)
        local = await engines.call("item_knn", "similarity", TENANT, "v1", query)
        assert handle.calls == ["similarity"]  # held now: no second round trip
        assert np.array_equal(np.asarray(local), np.asarray(remote))
        assert np.asarray(local).shape == (5, 7) and np.asarray(local).any()

        engines.near = None  # without near models every call goes to the replica
        await engines.call("item_knn", "similarity", TENANT, "v1", query)
        assert handle.calls == ["similarity", "similarity"]

    asyncio.run(run())
