"""Bad input gives BAD_USER_INPUT (or RATE_LIMITED) and loses or changes no data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from graph_api.app import create_app
from graph_api.ratelimit import RateLimiter, TierLimits
from tests.graph_api.conftest import Api

RATE = "mutation($i: UUID!, $r: Float!) { rateItem(itemId: $i, rating: $r) { rating } }"
RECORD = "mutation($input: InteractionInput!) { recordInteraction(input: $input) { id } }"
RECOMMEND = "query($o: RecommendationOptions) { recommendations(options: $o) { totalCount } }"
STATE = "{ me { ratings { rating } interactions { interactionType } } items { id title } }"


@pytest.fixture
async def seeded(api: Api) -> dict[str, Any]:
    token, _ = await api.register("in@a.example", "a.example")
    created = await api.ok(
        'mutation { createItem(input: {title: "Kept", externalId: "kept"}) { id } }', token=token
    )
    item = created["createItem"]["id"]
    await api.ok(RATE, {"i": item, "r": 3.5}, token)
    await api.ok(RECORD, {"input": {"itemId": item, "interactionType": "view"}}, token)
    return {"token": token, "item": item, "state": await api.ok(STATE, token=token)}


def _code(payload: dict[str, Any]) -> str:
    return payload["errors"][0]["extensions"]["code"]


@pytest.mark.parametrize("rating", [0.0, 0.3, 2.7, 5.5, -1.0, 4.25])
async def test_ratings_off_the_half_star_scale(
    api: Api, seeded: dict[str, Any], rating: float
) -> None:
    payload = await api.gql(RATE, {"i": seeded["item"], "r": rating}, seeded["token"])
    assert _code(payload) == "BAD_USER_INPUT" and payload["data"] is None
    assert await api.ok(STATE, token=seeded["token"]) == seeded["state"]


async def test_every_bad_input_is_refused_without_side_effects(
    api: Api, seeded: dict[str, Any]
) -> None:
    token, item = seeded["token"], seeded["item"]
    bad: list[tuple[str, dict[str, Any]]] = [
        (RECORD, {"input": {"itemId": item, "interactionType": "teleport"}}),
        (RECORD, {"input": {"itemId": item, "interactionType": "view", "idempotencyKey": ""}}),
        (RECOMMEND, {"o": {"numRecommendations": 0}}),
        (RECOMMEND, {"o": {"numRecommendations": 101}}),
        (RECOMMEND, {"o": {"algorithm": "magic"}}),
        (RECOMMEND, {"o": {"weights": {"magic": 1.0}}}),
        (RECOMMEND, {"o": {"weights": [{"engine": "als", "weight": "heavy"}]}}),
        (RECOMMEND, {"o": {"weights": "als"}}),
        (RECOMMEND, {"o": {"filters": {"minRating": 9}}}),
        ("{ items(limit: 0) { id } }", {}),
        ("{ items(offset: -1) { id } }", {}),
        ('mutation { createItem(input: {title: "dup", externalId: "kept"}) { id } }', {}),
        ('mutation { createItem(input: {title: "  "}) { id } }', {}),
        ('mutation { createItem(input: {title: "m", metadata: [1, 2]}) { id } }', {}),
        (
            'mutation { importItems(items: [{title: "a", externalId: "x"},'
            ' {title: "b", externalId: "x"}]) { imported } }',
            {},
        ),
        ('mutation { trainModel(algorithms: ["magic"]) { jobId } }', {}),
        ("mutation { importItems(items: []) { imported } }", {}),
    ]
    for query, variables in bad:
        payload = await api.gql(query, variables, token)
        assert _code(payload) == "BAD_USER_INPUT", (query, variables, payload)
    assert await api.ok(STATE, token=token) == seeded["state"]
    assert api.recommender.trained == []


async def test_registration_rules(api: Api) -> None:
    from tests.graph_api.conftest import REGISTER

    base = {
        "email": "x@y.example",
        "username": "x",
        "password": "long enough pw",
        "tenantDomain": "y.example",
    }
    await api.create_tenant("y.example")
    for change in (
        {"email": "nope"},
        {"password": "short"},
        {"username": " "},
        {"tenantDomain": "has space"},
    ):
        payload = await api.gql(REGISTER, {"input": base | change})
        assert _code(payload) == "BAD_USER_INPUT", change
    await api.ok(REGISTER, {"input": base})
    duplicate = await api.gql(REGISTER, {"input": base | {"email": "X@Y.example"}})
    assert _code(duplicate) == "BAD_USER_INPUT"


async def test_valid_weights_reach_the_recommender(api: Api, seeded: dict[str, Any]) -> None:
    for weights in ({"als": 2.0, "popularity": 0.5}, [{"engine": "als", "weight": 2}]):
        await api.ok(RECOMMEND, {"o": {"weights": weights, "algorithm": "hybrid"}}, seeded["token"])
        assert api.recommender.requests[-1].weights is not None
        assert api.recommender.requests[-1].weights["als"] == 2.0


async def test_rate_limit_status_and_refusal(api: Api) -> None:
    token, _ = await api.register("busy@a.example", "a.example")
    services = api.app.state.services
    services.rate_limiter = RateLimiter(
        api.cache, window_seconds=60, tier_limits={"basic": TierLimits(per_user=5, per_tenant=50)}
    )
    first = await api.ok("{ rateLimitStatus { limit remaining used } }", token=token)
    assert first["rateLimitStatus"] == {"limit": 5, "remaining": 4, "used": 1}
    # One request is charged once: the sum of its root fields' costs (1 each here).
    second = await api.ok("{ rateLimitStatus { remaining } me { id } items { id } }", token=token)
    assert second["rateLimitStatus"]["remaining"] == 1
    await api.ok("{ me { id } }", token=token)
    response = await api.post("{ me { id } }", token=token)
    assert response.status_code == 429
    refused = response.json()
    assert _code(refused) == "RATE_LIMITED"
    assert refused["errors"][0]["extensions"]["retryAfterSeconds"] > 0


async def test_app_with_embedded_defaults_migrates_an_empty_database(tmp_path: Path) -> None:
    """No database or cache passed in: the app builds its own from settings and owns them."""
    import httpx

    from storage.db import Database
    from tests.graph_api.conftest import make_settings
    from tests.graph_api.fakes import CatalogueService

    settings = make_settings(tmp_path / "embedded")
    reader = Database.from_settings(settings)
    app = create_app(recommender=CatalogueService(reader), settings=settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/health")).json()["status"] == "ok"
            body = {"query": "{ items { id } }"}
            response = await client.post("/graphql", json=body)
            assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert (tmp_path / "embedded" / "recserve.db").exists()
    await reader.dispose()
