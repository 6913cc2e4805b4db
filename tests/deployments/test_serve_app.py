"""The whole Serve application on the shared local Ray: real artifacts, real engines, HTTP edge.

One app is deployed per module (deploying costs most of the time); every test asks it something.
Its engines are laid out both ways: an engine pool (one deployment serving item-kNN, EASE and
ALS, as the laptop's serve_config.yaml pools all nine) beside popularity's own deployment.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deployments.app import AppArgs, build_app, engine_deployments
from recommend.model_cache import split_model_id
from recommend.types import RecommendationRequest, RecommendationResponse
from storage.artifacts import ArtifactStore
from storage.settings import Settings
from tests.deployments.fakes import database_tenant, synthetic_matrix
from training.algorithms import create

pytestmark = [pytest.mark.ray, pytest.mark.slow]

APP = "recserve-deployments-test"
ROUTE = "/deployments-test"
TENANT = "acme"
ENGINES = ["popularity", "item_knn", "ease", "als"]  # trending falls back to popularity
POOL = {"engines": ["item_knn", "ease", "als"]}  # popularity keeps engine_popularity


SECRET = "serve-app-test-secret-0123456789abcdef"


def _publish(store: ArtifactStore, tmp: Path, name: str, *, hot: int | None = None) -> str:
    model = create(name).fit(synthetic_matrix(hot=hot))
    version = store.new_version(TENANT, name)
    local = tmp / f"{name}-{version}"
    model.save(local)
    store.save(TENANT, name, version, local, {"algorithm": name})
    store.promote(TENANT, name, version)
    return version


def _publish_corrupt(store: ArtifactStore, tmp: Path, name: str) -> None:
    local = tmp / f"{name}-corrupt"
    local.mkdir()
    (local / "meta.json").write_text(json.dumps({"algorithm": name}))
    (local / "arrays.npz").write_bytes(b"not an npz file")
    version = store.new_version(TENANT, name)
    store.save(TENANT, name, version, local, {"algorithm": name})
    store.promote(TENANT, name, version)


@pytest.fixture(scope="module")
def deployed(serve_instance: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    from ray import serve

    root = tmp_path_factory.mktemp("serve-data")
    store = ArtifactStore(str(root / "artifacts"))
    for name in ("popularity", "item_knn", "ease"):
        _publish(store, root, name, hot=5)
    _publish_corrupt(store, root, "als")  # loading it raises on the replica
    with pytest.MonkeyPatch.context() as env:
        # Only the builder's environment carries these: the replicas must get them from it.
        env.setenv("RECSERVE_DATA_DIR", str(root))
        env.setenv("RECSERVE_ARTIFACT_URI", str(root / "artifacts"))
        env.setenv("RECSERVE_JWT_SECRET", SECRET)
        args = AppArgs(
            engines=ENGINES,
            engine_groups=POOL,
            engine_timeout_s=20.0,
            version_ttl_s=0.0,
            train_entrypoint="tests.deployments.fakes:fake_train",
            settings={"env": "test"},
        )
        app = build_app(args)
    serve.run(app, name=APP, route_prefix=ROUTE)
    serving = {a: name for name, algos in engine_deployments(args).items() for a in algos}
    assert serving == {"popularity": "engine_popularity"} | dict.fromkeys(
        POOL["engines"], "engines"
    )
    yield {
        "combiner": serve.get_deployment_handle("combiner", app_name=APP),
        "engine": lambda n: serve.get_deployment_handle(serving[n], app_name=APP),
        "store": store,
        "root": root,
        "port": serve_instance,
    }
    serve.delete(APP)


async def _recommend(deployed: dict, **fields) -> RecommendationResponse:
    # Undiversified: these tests compare lists with the models' own order.
    request = RecommendationRequest(**{"tenant_id": TENANT, "k": 5, "diversify": False, **fields})
    return await deployed["combiner"].recommend.remote(request)


async def test_hybrid_drops_the_broken_engine_and_blends_on_request(deployed: dict) -> None:
    reply = await _recommend(deployed, user_id="u1", explain=True)
    assert reply.engines_used == ["ease"] and reply.engines_failed == ["als"]
    assert len(reply.items) == 5 and reply.items[0].reason
    ease = create("ease").fit(synthetic_matrix(hot=5))
    trained_seen = set(ease.item_ids[ease.user_items[ease.user_index("u1")].indices])
    assert trained_seen.isdisjoint(item.item_id for item in reply.items)
    blended = await _recommend(deployed, user_id="u1", weights={"ease": 1.0, "item_knn": 1.0})
    assert set(blended.engines_used) == {"ease", "item_knn"}
    assert any(len(item.engine_scores) == 2 for item in blended.items)


async def test_diversified_lists_take_similarity_from_the_combiners_own_model(
    deployed: dict,
) -> None:
    asked = {"user_id": "u2", "diversify": True, "explain": True, "k": 6}
    first = await _recommend(deployed, **asked)  # item-kNN's replica answers the similarity
    for _ in range(100):  # meanwhile the combiner loads the model itself, in the background
        held = await deployed["combiner"].near_models.remote()
        if any(split_model_id(key)[:2] == ("item_knn", TENANT) for key in held):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"the combiner never held item_knn's model: {held}")
    again = await _recommend(deployed, **asked)  # answered without that round trip
    assert [i.item_id for i in again.items] == [i.item_id for i in first.items]
    assert [i.because_item_ids for i in again.items] == [i.because_item_ids for i in first.items]
    plain = await _recommend(deployed, **{**asked, "diversify": False})
    assert [i.item_id for i in first.items] != [i.item_id for i in plain.items]  # MMR ran


async def test_single_engine_and_popularity_fallback(deployed: dict) -> None:
    reply = await _recommend(deployed, user_id="u1", algorithm="ease", categories=("a",))
    assert reply.engines_used == ["ease"] and reply.engines_failed == []
    assert all(int(item.item_id[1:]) < 20 for item in reply.items)
    cold = await _recommend(deployed, user_id="stranger", algorithm="item_knn")
    assert cold.engines_used == ["popularity"]
    assert cold.items[0].item_id == "i5"
    broken = await _recommend(deployed, user_id="u1", algorithm="als")
    assert broken.engines_failed == ["als"] and broken.engines_used == ["popularity"]


async def test_promoting_a_version_swaps_the_model_without_restart(deployed: dict) -> None:
    before = await _recommend(deployed, user_id="stranger", algorithm="popularity")
    version = _publish(deployed["store"], deployed["root"], "popularity", hot=33)
    after = await _recommend(deployed, user_id="stranger", algorithm="popularity")
    assert before.items[0].item_id == "i5"
    assert after.items[0].item_id == "i33"
    assert after.model_version == version != before.model_version


async def test_concurrent_requests_are_batched_correctly(deployed: dict) -> None:
    users = [f"u{u}" for u in range(0, 60, 3)]
    replies = await asyncio.gather(
        *(_recommend(deployed, user_id=u, algorithm="ease") for u in users)
    )
    ease = create("ease").fit(synthetic_matrix(hot=5))
    got = {u: [item.item_id for item in r.items] for u, r in zip(users, replies, strict=True)}
    expected = {u: [item for item, _ in ease.recommend(u, 5)] for u in users}
    assert got == expected


async def test_the_engine_pool_answers_each_algorithm_with_its_own_model(deployed: dict) -> None:
    """item-kNN and EASE share one deployment (one handle, one replica's models): asked at once,
    for the same users, each answer is its own algorithm's, never the other's."""
    users = [f"u{u}" for u in range(1, 40, 4)]
    asked = [(u, a) for u in users for a in ("item_knn", "ease")]
    replies = await asyncio.gather(
        *(_recommend(deployed, user_id=u, algorithm=a) for u, a in asked)
    )
    models = {a: create(a).fit(synthetic_matrix(hot=5)) for a in ("item_knn", "ease")}
    for (user, algorithm), reply in zip(asked, replies, strict=True):
        assert reply.engines_used == [algorithm], (user, algorithm, reply)
        expected = [item for item, _ in models[algorithm].recommend(user, 5)]
        assert [item.item_id for item in reply.items] == expected, (user, algorithm)
    assert any(
        [i.item_id for i in a.items] != [i.item_id for i in b.items]
        for a, b in zip(replies[::2], replies[1::2], strict=True)
    ), "the two algorithms should disagree somewhere, or this test proves nothing"
    # One pool replica holds both algorithms' models (and never loaded ALS's broken one).
    info = await deployed["engine"]("ease").info.remote()
    assert info["algorithms"] == POOL["engines"]
    held = {split_model_id(key)[0] for key in info["models"]}
    assert {"item_knn", "ease"} <= held and "als" not in held
    assert await deployed["combiner"].health.remote() == dict.fromkeys(ENGINES, "ok")


async def test_similar_items_and_trending(deployed: dict) -> None:
    similar = await deployed["combiner"].similar_items.remote(TENANT, "i1", 4)
    assert len(similar) == 4 and all(int(item[1:]) < 20 for item, _ in similar)
    trending = await deployed["combiner"].trending.remote(TENANT, "b", 3)
    assert len(trending) == 3 and all(int(item[1:]) >= 20 for item, _ in trending)
    assert await deployed["combiner"].trending.remote("nobody", None, 3) == []


async def test_replicas_see_the_builder_environment(deployed: dict) -> None:
    info = await deployed["engine"]("ease").info.remote()
    assert info["data_dir"] == str(deployed["root"])
    assert info["env"] == "test"
    # The builder's environment had the JWT secret; the Serve config (runtime_env) never
    # carries it: this Ray was started before it was set, so the replica has none at all.
    assert "RECSERVE_JWT_SECRET" not in info["recserve_settings"]
    assert SECRET not in str(info)
    assert info["config"]["max_models_per_replica"] == 4


async def test_training_runs_as_a_ray_task(deployed: dict) -> None:
    # Jobs are recorded against a tenant of the replicas' database (the data dir's SQLite).
    tenant = await database_tenant(Settings(data_dir=deployed["root"], env="test"))
    job = await deployed["combiner"].train.remote(tenant, ["ease"])
    assert job.status == "queued"
    again = await deployed["combiner"].train.remote(tenant, None)  # overlaps: the same job
    assert again.job_id == job.job_id
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job = await deployed["combiner"].training_job.remote(job.job_id)
        if job.status in ("succeeded", "failed"):
            break
        await asyncio.sleep(0.2)
    assert job.status == "succeeded", job
    assert job.model_version == f"trained-{deployed['root'].name}"
    assert job.metrics == {"ease": {"ndcg@10": 0.5}}
    assert job.progress == {"ease": {"state": "succeeded"}}
    assert job.duration_seconds is not None and job.trigger == "api"


async def test_graphql_ingress_answers_http(deployed: dict) -> None:
    url = f"http://127.0.0.1:{deployed['port']}{ROUTE}/health"
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(url)
    assert response.status_code == 200, response.text
