"""The one recommendation step (``recommend.step``) over in-process engines, no Ray.

Real models fitted on two planted taste clusters; the Serve combiner runs the same core over
handles (``test_serve_app``), so what holds here holds there.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from recommend.inprocess import InProcessService
from recommend.model_cache import MemoryModelSource
from recommend.options import ServingOptions
from recommend.types import RecommendationRequest
from storage.settings import Settings
from tests.deployments.fakes import database_tenant, synthetic_matrix
from training.algorithms import Recommender, create
from training.hybrid import HybridConfig

TENANT = "acme"
ENGINES = ["popularity", "trending", "item_knn", "user_knn", "ease", "als", "content"]


class CountingSource(MemoryModelSource):
    """The in-memory source, counting loads; ``broken`` engines have a version but fail to load."""

    def __init__(
        self,
        models: dict[str, Recommender],
        broken: tuple[str, ...] = (),
        blend: dict[str, float] | None = None,
    ) -> None:
        super().__init__(TENANT, models, blend=blend)
        self.broken = broken
        self.loads: list[str] = []

    def current_version(self, tenant_id: str, algorithm: str) -> str | None:
        if tenant_id == TENANT and algorithm in self.broken:
            return self.version
        return super().current_version(tenant_id, algorithm)

    def load(self, tenant_id: str, algorithm: str, version: str) -> Recommender:
        self.loads.append(algorithm)
        if algorithm in self.broken:
            raise OSError(f"{algorithm} artifact is corrupt")
        return super().load(tenant_id, algorithm, version)


@pytest.fixture(scope="module")
def models() -> dict[str, Recommender]:
    matrix = synthetic_matrix(hot=5)
    return {name: create(name).fit(matrix) for name in ENGINES}


def served(
    models: dict[str, Recommender],
    tmp_path: Path,
    *,
    broken: tuple[str, ...] = (),
    blend: dict[str, float] | None = None,
    **hybrid,
) -> tuple[InProcessService, CountingSource]:
    source = CountingSource({n: m for n, m in models.items() if n not in broken}, broken, blend)
    options = ServingOptions(hybrid=HybridConfig(**hybrid)) if hybrid else None
    return InProcessService(
        Settings(data_dir=tmp_path), ENGINES, source=source, options=options
    ), source


def request(**fields) -> RecommendationRequest:
    return RecommendationRequest(**({"tenant_id": TENANT, "user_id": "u1", "k": 5} | fields))


def own_items(model: Recommender, user: str) -> tuple[str, ...]:
    return tuple(str(model.item_ids[j]) for j in model.user_items[model.user_index(user)].indices)


async def test_the_hybrid_blends_its_engines_and_excludes_the_history(models, tmp_path) -> None:
    core, _ = served(models, tmp_path)
    history = own_items(models["ease"], "u1")
    reply = await core.recommend(request(explain=True, history=history))
    assert reply.engines_used == list(HybridConfig().weights)  # the tuned engines, no others
    assert len(reply.items) == 5 and reply.items[0].reason
    assert set(history).isdisjoint(item.item_id for item in reply.items)
    assert all(set(item.engine_scores) <= set(HybridConfig().weights) for item in reply.items)


async def test_a_broken_engine_is_dropped_and_named(models, tmp_path) -> None:
    core, _ = served(models, tmp_path, broken=("als",))
    reply = await core.recommend(request())
    assert reply.engines_used == ["ease"] and reply.engines_failed == ["als"]
    assert len(reply.items) == 5


async def test_a_single_engine_answers_exactly_as_its_model(models, tmp_path) -> None:
    core, _ = served(models, tmp_path)
    for algorithm in ("ease", "item_knn", "als"):
        history = own_items(models[algorithm], "u3")
        asked = request(user_id="u3", algorithm=algorithm, history=history, diversify=False)
        reply = await core.recommend(asked)
        assert [(i.item_id, i.score) for i in reply.items] == models[algorithm].recommend("u3", 5)
        assert reply.model_version == "v1"


async def test_aliases_name_the_seed_vocabulary(models, tmp_path) -> None:
    core, _ = served(models, tmp_path)
    assert core.catalog.engines_of("matrix_factorization") == ("als",)
    blended = await core.recommend(request(algorithm="collaborative"))
    assert set(blended.engines_used) == {"item_knn", "user_knn"}
    assert blended.algorithm == "collaborative"
    content = await core.recommend(request(algorithm="content_based", history=("i1",)))
    assert content.engines_used == ["content"]
    with pytest.raises(ValueError, match="unknown algorithm"):
        await core.recommend(request(algorithm="deep_magic"))


async def test_cold_users_get_the_cold_blend_then_the_fallback(models, tmp_path) -> None:
    core, _ = served(models, tmp_path)
    # no history at all: the cold weights (popularity and content); content needs a history
    cold = await core.recommend(request(user_id="stranger", history=()))
    assert cold.engines_used == ["popularity"] and cold.items[0].item_id == "i5"
    # one fresh interaction: content and the collaborative engines fold it in
    warming = await core.recommend(request(user_id="stranger", history=("i22",)))
    assert "popularity" in warming.engines_used and "ease" in warming.engines_used
    # a single collaborative engine with nothing to say: popularity answers instead
    fallback = await core.recommend(request(user_id="stranger", algorithm="item_knn"))
    assert fallback.engines_used == ["popularity"]
    nobody = await core.recommend(request(tenant_id="nobody"))
    assert nobody.items == [] and nobody.engines_used == []


async def test_request_weights_and_switching_override_the_blend(models, tmp_path) -> None:
    core, _ = served(models, tmp_path)
    only_popular = await core.recommend(
        request(weights={"popularity": 1.0, "ease": 0.0}, diversify=False)
    )
    assert only_popular.engines_used == ["popularity"]
    expected = [i for i, _ in models["popularity"].recommend("u1", 5)]
    assert [item.item_id for item in only_popular.items] == expected
    switching = await core.recommend(request(strategy="switching", history=("i1", "i2")))
    assert len(switching.items) == 5
    assert len({engine for item in switching.items for engine in item.engine_scores}) == 1


async def test_the_blend_reaches_beyond_each_engines_top_k(models, tmp_path) -> None:
    """Engines are asked for ``depth`` candidates, so agreement below an engine's top k counts."""

    async def deep_votes(depth: int) -> int:
        core, _ = served(models, tmp_path, depth=depth)
        votes = 0
        for user in ("u1", "u2", "u3", "u40"):
            reply = await core.recommend(request(user_id=user, k=3, diversify=False))
            for engine in ("ease", "als"):
                top = {i for i, _ in models[engine].recommend(user, 3)}
                votes += sum(
                    engine in i.engine_scores and i.item_id not in top for i in reply.items
                )
        return votes

    assert await deep_votes(depth=3) == 0
    assert await deep_votes(depth=30) > 0


async def test_a_tenant_is_served_the_blend_its_training_tuned(models, tmp_path) -> None:
    core, _ = served(models, tmp_path, blend={"user_knn": 1.0, "item_knn": 0.5})
    reply = await core.recommend(request())
    assert reply.engines_used == ["user_knn", "item_knn"]
    # a request's own weights, and the operator's per_tenant switch, win over it
    asked = await core.recommend(request(weights={"ease": 1.0}))
    assert asked.engines_used == ["ease"]
    fixed, _ = served(
        models, tmp_path, blend={"user_knn": 1.0}, per_tenant=False, weights={"als": 1.0}
    )
    assert (await fixed.recommend(request())).engines_used == ["als"]
    # a cold user still starts from the cold blend, then moves to the tenant's
    cold = await core.recommend(request(user_id="stranger", history=()))
    assert cold.engines_used == ["popularity"]


async def test_diversify_and_because(models, tmp_path) -> None:
    core, _ = served(models, tmp_path)
    history = own_items(models["ease"], "u1")
    reply = await core.recommend(request(diversify=True, explain=True, history=history))
    assert len(reply.items) == 5
    assert any(item.because_item_ids for item in reply.items)
    for item in reply.items:
        assert set(item.because_item_ids) <= set(history) and len(item.because_item_ids) <= 3
        if item.because_item_ids:
            first = item.because_item_ids[0]
            assert f"because you interacted with {first}" in (item.reason or "")
    plain = await core.recommend(request(history=history))
    assert all(item.because_item_ids == () for item in plain.items)  # only when explaining


async def test_explanations_name_the_strategy_and_each_engines_share(models, tmp_path) -> None:
    core, _ = served(models, tmp_path)
    history = own_items(models["ease"], "u1")
    blended = await core.recommend(request(history=history))
    assert blended.strategy == "weighted"
    for item in blended.items:
        parts = item.engine_scores
        assert sum(parts.values()) == pytest.approx(item.score)
        assert item.engine_shares == pytest.approx({e: v / item.score for e, v in parts.items()})
        assert list(item.engine_shares.values()) == sorted(item.engine_shares.values())[::-1]
    assert any(len(item.engine_shares) == 2 for item in blended.items)
    cold = await core.recommend(request(user_id="stranger", history=()))
    assert cold.strategy == "cold_start"
    assert all(item.engine_shares == {"popularity": 1.0} for item in cold.items)
    fallback = await core.recommend(request(user_id="stranger", algorithm="item_knn"))
    assert fallback.strategy == "cold_start"  # item_knn had nothing: popularity answered
    switching = await core.recommend(request(strategy="switching", history=history))
    assert switching.strategy == "switching"
    [engine] = {e for item in switching.items for e in item.engine_shares}
    assert all(item.engine_shares == {engine: 1.0} for item in switching.items)
    single = await core.recommend(request(algorithm="ease", history=history))
    assert single.strategy == "engine"


async def test_concurrent_first_requests_load_each_model_once(models, tmp_path) -> None:
    core, source = served(models, tmp_path)
    users = [f"u{u}" for u in range(10)]
    await asyncio.gather(*(core.recommend(request(user_id=u, algorithm="ease")) for u in users))
    assert source.loads.count("ease") == 1


async def test_similar_items_and_trending(models, tmp_path) -> None:
    core, _ = served(models, tmp_path)
    similar = await core.similar_items(tenant_id=TENANT, item_id="i1", k=4)
    assert len(similar) == 4 and all(int(item[1:]) < 20 for item, _ in similar)
    top = await core.trending(tenant_id=TENANT, category="b", limit=3)
    assert len(top) == 3 and all(int(item[1:]) >= 20 for item, _ in top)
    assert await core.trending(tenant_id="nobody", category=None, limit=3) == []


async def test_training_runs_in_process_and_invalidates_versions(models, tmp_path) -> None:
    settings = Settings(data_dir=tmp_path)
    tenant = await database_tenant(settings)
    local = InProcessService(
        settings,
        ["ease"],
        source=MemoryModelSource(tenant, {"ease": models["ease"]}),
        options=ServingOptions(train_entrypoint="tests.deployments.fakes:fake_train"),
    )
    job = await local.train(tenant_id=tenant, algorithms=["ease"])
    assert job.status == "succeeded" and job.algorithms == ["ease"]
    assert job.model_version == f"trained-{tmp_path.name}"
    assert job.metrics == {"ease": {"ndcg@10": 0.5}}
    assert job.progress == {"ease": {"state": "succeeded"}} and job.trigger == "api"
    await local.stop_background()
