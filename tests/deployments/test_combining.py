"""Combiner-side logic without Ray: fan-out deadlines, blending, the GraphQL adapter."""

from __future__ import annotations

import time

import numpy as np

from deployments.blend import Similarity, blend_candidates, finish
from deployments.combiner import request_from_dict
from deployments.fanout import fan_out, first_answer
from deployments.ingress import HandleRecommender
from deployments.training_jobs import summarise
from graph_api.recommender import RecommendationRequest, Recommender
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


def _request(**overrides) -> RecommendationRequest:
    return request_from_dict({"tenant_id": "t", "user_id": "u", "k": 3, **overrides})


def test_blend_ranks_agreement_first_and_explains() -> None:
    answered = {
        "ease": [("a", 9.0), ("b", 8.0), ("c", 7.0)],
        "item_knn": [("b", 0.9), ("d", 0.8)],
    }
    request = _request(explain=True)
    items = finish(blend_candidates(answered, request, {}), request, None)
    assert items[0].item_id == "b"  # both engines put it high
    assert len(items) == 3
    assert set(items[0].engine_scores) == {"ease", "item_knn"}
    assert items[0].reason and "ease" in items[0].reason


def test_request_weights_override_the_blend() -> None:
    answered = {"ease": [("a", 1.0)], "popularity": [("p", 1.0)]}
    items = finish(
        blend_candidates(answered, _request(weights={"ease": 0.0, "popularity": 1.0}), {}),
        _request(),
        None,
    )
    assert [i.item_id for i in items] == ["p"]


def test_mmr_and_because_use_the_similarity() -> None:
    answered = {"ease": [("a1", 3.0), ("a2", 2.9), ("b1", 2.0), ("b2", 1.0)]}
    request = _request(k=2, diversify=True, explain=True, history=["h"])
    candidates = blend_candidates(answered, request, {})
    rows = [c.item_id for c in candidates]
    cols = [*rows, "h"]
    matrix = np.eye(len(rows), len(cols))
    matrix[0, 1] = matrix[1, 0] = 0.99  # a1 and a2 are near duplicates
    matrix[2, 4] = 0.8  # b1 resembles the history item
    items = finish(candidates, request, Similarity(rows, cols, matrix))
    assert [i.item_id for i in items] == ["a1", "b1"]
    assert items[1].because_item_id == "h"
    assert items[0].because_item_id is None


async def test_handle_recommender_round_trips_through_dicts() -> None:
    handle = FakeHandle(
        {
            "recommend": {
                "items": [{"item_id": "a", "score": 1.0, "engine_scores": {"ease": 1.0}}],
                "algorithm": "hybrid",
                "engines_used": ["ease"],
                "engines_failed": ["als"],
                "model_version": "v000001",
            },
            "similar_items": [["b", 0.5]],
            "trending": [("c", 3)],
            "train": {
                "job_id": "j",
                "tenant_id": "t",
                "algorithms": ["ease"],
                "status": "submitted",
            },
        }
    )
    adapter = HandleRecommender(handle)  # type: ignore[arg-type]
    assert isinstance(adapter, Recommender)
    response = await adapter.recommend(_request(categories=["x"], history=["h"]))
    assert response.items[0].item_id == "a" and response.engines_failed == ["als"]
    assert response.model_version == "v000001"
    sent = handle.calls[0][1]
    assert sent["tenant_id"] == "t" and tuple(sent["categories"]) == ("x",)
    assert await adapter.similar_items(tenant_id="t", item_id="a", k=1) == [("b", 0.5)]
    assert await adapter.trending(tenant_id="t", category=None, limit=1) == [("c", 3.0)]
    job = await adapter.train(tenant_id="t", algorithms=["ease"])
    assert job.status == "submitted" and job.algorithms == ["ease"]
    assert handle.calls[-1] == ("train", {"tenant_id": "t", "algorithms": ["ease"]})


def test_a_pipeline_result_becomes_job_fields() -> None:
    from training.pipeline import TrainingResult

    result = TrainingResult(
        tenant_id="t",
        versions={"ease": "v000002", "als": "v000001"},
        metrics={"ease": {"ndcg@10": 0.31}},
        counts={"users": 3},
        duration_seconds=1.0,
    )
    summary = summarise(result)
    assert summary["model_version"] == "als=v000001,ease=v000002"
    assert summary["algorithms"] == ["ease", "als"]
    assert summary["metrics"] == {"ease": {"ndcg@10": 0.31}}
    same = summarise({"versions": {"ease": "v3", "als": "v3"}, "metrics": {}})
    assert same["model_version"] == "v3"
