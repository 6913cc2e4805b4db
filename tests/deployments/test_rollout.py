"""Zero-downtime rollout on the shared Serve instance: real database, pipeline and artifacts.

A background loop keeps asking the combiner while new versions are trained, promoted, rolled
back or half-written; no request may fail and the request after a promotion serves the new
version (``version_ttl_s=0``: every request reads the promoted pointer).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ray import serve

from cluster import operations as ops
from deployments.app import AppArgs, compose
from deployments.vector_store import NAME as VECTORS
from deployments.vector_store import RemoteVectorStore
from jobs.ledger import TrainingJob
from recommend.model_cache import ArtifactModelSource
from recommend.types import RecommendationRequest, RecommendationResponse
from storage import model_registry
from storage.artifacts import ArtifactStore
from storage.errors import NotFound
from storage.settings import Settings
from training.algorithms import load as load_model
from training.pipeline import STORED_DIMS, train_tenant, train_tenant_async

pytestmark = [pytest.mark.ray, pytest.mark.slow]

APP = "recserve-rollout-test"
DOMAIN = "rollout.example"


@dataclass
class Traffic:
    """What the background loop saw: (seconds, model_version) per answer, and every failure."""

    answers: list[tuple[float, str | None]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    wanted: int | None = None  # stop once this many answers arrived
    enough: asyncio.Event = field(default_factory=asyncio.Event)

    def versions(self) -> list[str | None]:
        return [version for _, version in self.answers]


@pytest.fixture(scope="module")
def deployed(serve_instance: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    from ray import serve

    root = tmp_path_factory.mktemp("rollout-data")
    settings = Settings(data_dir=root, env="test")
    tenant = asyncio.run(ops.create_tenant(settings, domain=DOMAIN))
    asyncio.run(
        ops.ingest_synthetic(
            settings, domain=DOMAIN, users=60, items=40, clusters=4, per_user=8, seed=7
        )
    )
    tenant_id = str(tenant.id)
    first = asyncio.run(
        train_tenant_async(settings, tenant_id, ["popularity", "content"], evaluate=False)
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RECSERVE_DATA_DIR", str(root))  # the replicas get the builder's RECSERVE_*
        env.setenv("RECSERVE_ENV", "test")
        args = AppArgs(
            engines=["popularity", "content"],
            graphql=False,
            version_ttl_s=0.0,
            engine_timeout_s=20.0,
        )
        serve.run(compose(args), name=APP, route_prefix="/rollout-test")
    yield {
        "combiner": serve.get_deployment_handle("combiner", app_name=APP),
        "settings": settings,
        "tenant_id": tenant_id,
        "v1": first.versions["popularity"],
        "store": ArtifactStore(str(settings.artifact_uri)),
    }
    serve.delete(APP)


async def _ask(deployed: dict) -> RecommendationResponse:
    request = RecommendationRequest(deployed["tenant_id"], "nobody", "popularity", k=5)
    return await deployed["combiner"].recommend.remote(request)


async def _keep_asking(deployed: dict, stop: asyncio.Event, traffic: Traffic) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        try:
            reply = await _ask(deployed)
            traffic.answers.append((time.perf_counter() - started, reply.model_version))
            if traffic.wanted is not None and len(traffic.answers) >= traffic.wanted:
                traffic.enough.set()
        except Exception as error:  # the assertion below reports every one
            traffic.failures.append(repr(error))
        await asyncio.sleep(0.02)


async def _while_asking(deployed: dict, work: Any) -> tuple[Any, Traffic]:
    traffic, stop = Traffic(), asyncio.Event()
    loop = asyncio.create_task(_keep_asking(deployed, stop, traffic))
    try:
        result = await work
        traffic.wanted = len(traffic.answers) + 3  # a few answers after the change too
        await asyncio.wait_for(traffic.enough.wait(), timeout=30)
        return result, traffic
    finally:
        stop.set()
        await loop


async def test_a_trained_version_is_served_from_the_next_request(deployed: dict) -> None:
    assert (await _ask(deployed)).model_version == deployed["v1"]
    work = asyncio.to_thread(
        train_tenant, deployed["settings"], deployed["tenant_id"], ["popularity"]
    )
    result, traffic = await _while_asking(deployed, work)
    v2 = result.versions["popularity"]
    assert (await _ask(deployed)).model_version == v2 != deployed["v1"]
    assert traffic.failures == [] and len(traffic.answers) >= 3
    seen = traffic.versions()
    assert set(seen) <= {deployed["v1"], v2}
    assert seen == sorted(seen)  # never back to v1 once v2 was served
    deployed["v2"] = v2


async def test_rollback_serves_the_previous_version_again(deployed: dict) -> None:
    settings, tenant_id = deployed["settings"], deployed["tenant_id"]
    if "v2" not in deployed:  # run on its own: a second version to roll back from
        trained = await asyncio.to_thread(train_tenant, settings, tenant_id, ["popularity"])
        deployed["v2"] = trained.versions["popularity"]
    work = model_registry.rollback(settings, tenant_id, "popularity")
    back, traffic = await _while_asking(deployed, work)
    assert back == deployed["v1"]
    assert (await _ask(deployed)).model_version == deployed["v1"]
    await model_registry.promote(settings, tenant_id, "popularity", deployed["v2"])
    assert (await _ask(deployed)).model_version == deployed["v2"]
    assert traffic.failures == []


async def test_a_half_written_artifact_is_never_loaded(deployed: dict) -> None:
    store, tenant_id = deployed["store"], deployed["tenant_id"]
    half = store.new_version(tenant_id, "popularity")
    folder = Path(deployed["settings"].artifact_uri) / tenant_id / "popularity" / half
    folder.mkdir(parents=True)
    (folder / "arrays.npz").write_bytes(b"an upload cut short")
    with pytest.raises(NotFound):
        await model_registry.promote(deployed["settings"], tenant_id, "popularity", half)
    with pytest.raises(NotFound):
        ArtifactModelSource(deployed["settings"]).load(tenant_id, "popularity", half)
    assert half not in store.list_versions(tenant_id, "popularity")
    assert (await _ask(deployed)).model_version == store.current(tenant_id, "popularity")


async def test_serving_keeps_answering_while_a_ray_training_task_runs(deployed: dict) -> None:
    combiner = deployed["combiner"]

    async def train_through_serve() -> TrainingJob:
        job = await combiner.train.remote(deployed["tenant_id"], ["popularity"])
        deadline = time.monotonic() + 180
        while job.status not in ("succeeded", "failed") and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            job = await combiner.training_job.remote(job.job_id)
        return job

    job, traffic = await _while_asking(deployed, train_through_serve())
    assert job.status == "succeeded", job
    assert traffic.failures == [] and len(traffic.answers) >= 5
    slowest = max(seconds for seconds, _ in traffic.answers)
    assert slowest < 10.0, f"serving stalled for {slowest:.1f}s during training"
    assert (await _ask(deployed)).model_version == job.model_version


def _exact_top(vectors: np.ndarray, ids: list[str], item: str, k: int) -> list[str]:
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    scores = unit @ unit[ids.index(item)]
    order = [i for i in np.argsort(-scores, kind="stable") if ids[i] != item]
    return [ids[i] for i in order[:k]]


async def test_similar_items_and_vector_search_match_exact_cosine(deployed: dict) -> None:
    settings, store, tenant_id = deployed["settings"], deployed["store"], deployed["tenant_id"]
    folder = Path(settings.data_dir) / "content-model"
    store.load(tenant_id, "content", store.current(tenant_id, "content"), folder)
    model = load_model(folder)
    ids = [str(i) for i in model.item_ids]
    item = ids[3]
    served = await deployed["combiner"].similar_items.remote(tenant_id, item, 5)
    features = model.features.toarray()
    assert [i for i, _ in served] == _exact_top(features, ids, item, 5)

    vectors = model.item_vectors()  # what the pipeline upserted into items_content
    # The embedded store is held by the app's one ``vectors`` replica: ask through it.
    vector_store = RemoteVectorStore(serve.get_deployment_handle(VECTORS, app_name=APP))
    query = np.zeros(STORED_DIMS, dtype=np.float32)  # stored padded to the shared width
    query[: vectors.shape[1]] = vectors[3]
    hits = await vector_store.search(
        "items_content", query.tolist(), 5, tenant_id, exclude_ids=[item]
    )
    assert [hit.id for hit in hits] == _exact_top(vectors, ids, item, 5)
