"""Combiner-side logic without Ray: fan-out deadlines, the GraphQL adapter, job summaries.

The blend itself is tested once, in ``test_plan``: the combiner only wraps that core.
"""

from __future__ import annotations

import time

from deployments.ingress import ServeHandleService
from jobs.ledger import TrainingJob
from jobs.runners import summarise
from recommend.fanout import fan_out, first_answer
from recommend.step import catalog_for
from recommend.types import (
    RecommendationRequest,
    RecommendationResponse,
    RecommendationService,
    ScoredItem,
)
from tests.deployments.fakes import FakeHandle, FakeResponse


async def test_fan_out_drops_late_and_failing_engines() -> None:
    slow = FakeResponse([("x", 1.0)], delay=5.0)
    calls = {
        "ease": lambda: FakeResponse([("a", 2.0), ("b", 1.0)]),
        "als": lambda: slow,
        "bpr": lambda: FakeResponse(error=RuntimeError("model exploded")),
    }
    started = time.perf_counter()
    outcome = await fan_out(calls, timeout_s=0.2)
    assert time.perf_counter() - started < 1.0
    assert outcome.results == {"ease": [("a", 2.0), ("b", 1.0)]}
    assert outcome.failed == ["als", "bpr"]
    assert slow.cancelled


async def test_first_answer_skips_empty_and_broken_engines() -> None:
    calls = {
        "item_knn": lambda: FakeResponse(error=ValueError("boom")),
        "ease": lambda: FakeResponse([]),
        "als": lambda: FakeResponse([("z", 0.5)]),
    }
    name, answer, failed = await first_answer(calls, timeout_s=1.0)
    assert (name, answer, failed) == ("als", [("z", 0.5)], ["item_knn"])


async def test_the_serve_handle_service_passes_the_dataclasses_through() -> None:
    response = RecommendationResponse(
        items=[ScoredItem("a", 1.0, {"ease": 1.0})],
        algorithm="hybrid",
        engines_used=["ease"],
        engines_failed=["als"],
        model_version="v000001",
    )
    job = TrainingJob(job_id="j", tenant_id="t", algorithms=["ease"], status="queued")
    handle = FakeHandle(
        {
            "recommend_many": [response],
            "similar_items": [("b", 0.5)],
            "trending": [("c", 3.0)],
            "train": job,
        }
    )
    adapter = ServeHandleService(handle, catalog_for(["ease", "als"]), max_batch=32)  # type: ignore[arg-type]
    assert isinstance(adapter, RecommendationService)
    assert adapter.catalog.knows("matrix_factorization") and not adapter.catalog.knows("svd")
    request = RecommendationRequest("t", "u", k=3, categories=("x",), history=("h",))
    assert await adapter.recommend(request) is response
    [sent] = handle.calls[0][1]  # requests travel as a (here one-long) batch
    assert handle.calls[0][0] == "recommend_many"
    assert isinstance(sent, RecommendationRequest)
    assert sent == request  # the trace context rides along, outside equality
    assert await adapter.similar_items(tenant_id="t", item_id="a", k=1) == [("b", 0.5)]
    assert handle.calls[1] == ("similar_items", ("t", "a", 1))
    assert await adapter.trending(tenant_id="t", category=None, limit=1) == [("c", 3.0)]
    assert await adapter.train(tenant_id="t", algorithms=["ease"]) is job
    assert handle.calls[-1] == ("train", ("t", ["ease"]))


def test_a_pipeline_result_becomes_job_fields() -> None:
    from training.pipeline import TrainingResult

    result = TrainingResult(
        tenant_id="t",
        versions={"ease": "v000002", "als": "v000001"},
        metrics={"ease": {"ndcg@10": 0.31}},
        counts={"users": 3},
        duration_seconds=1.0,
    )
    result.skipped = {"svd": "too few users"}
    summary = summarise(result)
    assert summary["versions"] == {"ease": "v000002", "als": "v000001"}
    assert summary["metrics"] == {"ease": {"ndcg@10": 0.31}}
    assert summary["skipped"] == {"svd": "too few users"}
    assert summarise({"versions": {"ease": "v3"}})["skipped"] == {}
