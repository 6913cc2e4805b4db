"""Known ``recommendations`` documents answered without the executor (``graph_api.fast_path``)
answer exactly as the full path does; every other request goes the full way."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select

from graph_api.fast_path import FastPath
from graph_api.http import GRAPHQL_RESPONSE_JSON
from storage.models import Impression
from tests.graph_api.conftest import Api

CREATE_ITEM = 'mutation($t: String!) { createItem(input: {title: $t, category: "books"}) { id } }'
RECORD = (
    'mutation($i: UUID!) { recordInteraction(input: {itemId: $i, interactionType: "view"}) { id } }'
)
# What changes from one answer to the next whatever the path: the served list's id, when and how
# fast it was made, and whether it came from the cache.
DYNAMIC = (
    "recommendationId",
    "generatedAt",
    "responseTimeMs",
    "cached",
    "took",
    "traceId",
    "retryAfterSeconds",
)

ELIGIBLE = [
    # a storefront's list
    """query Shelf($o: RecommendationOptions) {
      recommendations(options: $o) { recommendationId items { score item { id title } } }
    }""",
    # everything the answer carries, aliases and __typename included
    """query($o: RecommendationOptions) {
      shelf: recommendations(options: $o) {
        __typename algorithm generatedAt took: responseTimeMs totalCount recommendationId variant
        items {
          __typename score reason engineScores
          item { id externalId title category description tags metadata createdAt updatedAt }
          explanation { contributions { engine share score } becauseOf { id title } }
        }
        explanation {
          strategy enginesUsed enginesFailed modelVersion cached
          items { contributions { engine share } }
        }
      }
    }""",
    # no options at all, literals instead of variables
    "{ recommendations { totalCount items { item { id } } } }",
    '{ recommendations(options: {numRecommendations: 2, algorithm: "ease", explain: true}) '
    "{ items { reason score item { title } } } }",
]
INELIGIBLE = [
    # a field whose value comes from the database, not from the answer
    "query($o: RecommendationOptions) { recommendations(options: $o) "
    "{ items { item { id averageRating } } } }",
    # a fragment, a directive, a second root field
    "query($o: RecommendationOptions) { recommendations(options: $o) { ...F } } "
    "fragment F on RecommendationResult { totalCount }",
    "query($o: RecommendationOptions, $x: Boolean!) { recommendations(options: $o) "
    "{ totalCount @include(if: $x) } }",
    "query($o: RecommendationOptions) { recommendations(options: $o) { totalCount } me { id } }",
    # the same key twice (GraphQL merges their selections)
    "query($o: RecommendationOptions) { recommendations(options: $o) "
    "{ items { score } items { item { id } } } }",
    # not a query, not valid, not GraphQL
    "mutation { logout }",
    "{ recommendations { nosuchfield } }",
    "{ recommendations {",
]


def _without_dynamic(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_dynamic(v) for k, v in value.items() if k not in DYNAMIC}
    if isinstance(value, list):
        return [_without_dynamic(v) for v in value]
    return value


async def _seed(api: Api) -> tuple[str, list[str]]:
    domain = f"{uuid.uuid4().hex[:8]}.example"
    token, _ = await api.register(f"admin@{domain}", domain)
    ids = [
        (await api.ok(CREATE_ITEM, {"t": f"Title {n}"}, token))["createItem"]["id"]
        for n in range(5)
    ]
    await api.ok(RECORD, {"i": ids[0]}, token)
    return token, ids


def _fast_path(api: Api) -> FastPath:
    found = next(r for r in api.app.routes if getattr(r, "path", None) == "/graphql")
    router = found.endpoint.__self__  # the POST route is the router's bound ``_post``
    assert isinstance(router.fast_path, FastPath)
    return router.fast_path


def _router(api: Api) -> Any:
    found = next(r for r in api.app.routes if getattr(r, "path", None) == "/graphql")
    return found.endpoint.__self__


def _counting(fast: FastPath) -> list[bool]:
    """Whether each answer came from the fast path (appended per request)."""
    answered: list[bool] = []
    original = fast.answer

    async def counted(*args: Any, **kwargs: Any) -> Any:
        response = await original(*args, **kwargs)
        answered.append(response is not None)
        return response

    fast.answer = counted  # type: ignore[method-assign]
    return answered


async def _both_ways(api: Api, query: str, variables: dict, token: str | None) -> tuple:
    router = _router(api)
    fast = router.fast_path
    assert fast is not None
    try:
        quick = await api.post(query, variables, token)
        router.fast_path = None
        full = await api.post(query, variables, token)
    finally:
        router.fast_path = fast
    return quick, full


@pytest.mark.parametrize("query", ELIGIBLE)
async def test_an_eligible_document_answers_as_the_full_path(api: Api, query: str) -> None:
    token, _ = await _seed(api)
    answered = _counting(_fast_path(api))
    variables = {"o": {"numRecommendations": 3, "explain": True}} if "$o" in query else {}
    await api.post(query, variables, token)  # the list computed once, then cached
    quick, full = await _both_ways(api, query, variables, token)
    assert answered[-1] is True  # the second request: the fast path's
    assert quick.status_code == full.status_code == 200
    assert quick.headers["content-type"] == full.headers["content-type"]
    fast_body, full_body = quick.json(), full.json()
    assert "errors" not in fast_body, fast_body
    assert _without_dynamic(fast_body) == _without_dynamic(full_body)
    assert list(fast_body) == list(full_body) == ["data"]
    shelf = next(iter(fast_body["data"].values()))
    if "recommendationId" in shelf:  # each answer is its own served list
        assert (
            shelf["recommendationId"] != next(iter(full_body["data"].values()))["recommendationId"]
        )


async def test_a_miss_is_computed_and_cached_through_the_fast_path(api: Api) -> None:
    token, _ = await _seed(api)
    answered = _counting(_fast_path(api))
    query = ELIGIBLE[1]
    first = (await api.post(query, {"o": {"numRecommendations": 2}}, token)).json()
    second = (await api.post(query, {"o": {"numRecommendations": 2}}, token)).json()
    assert answered == [True, True]
    assert first["data"]["shelf"]["explanation"]["cached"] is False
    assert second["data"]["shelf"]["explanation"]["cached"] is True
    assert len(api.recommender.requests) == 1


@pytest.mark.parametrize("query", INELIGIBLE)
async def test_other_documents_go_the_full_way(api: Api, query: str) -> None:
    token, _ = await _seed(api)
    answered = _counting(_fast_path(api))
    await api.post(query, {"o": {"numRecommendations": 2}, "x": True}, token)
    assert answered == [False]


async def test_bad_input_and_bad_tokens_are_answered_the_full_way(api: Api) -> None:
    token, _ = await _seed(api)
    answered = _counting(_fast_path(api))
    query = ELIGIBLE[0]
    cases = [
        ({"o": {"numRecommendations": 1000}}, token, "BAD_USER_INPUT"),
        ({"o": {"algorithm": "nosuch"}}, token, "BAD_USER_INPUT"),
        ({"o": {"numRecommendations": "three"}}, token, "BAD_USER_INPUT"),
        ({"o": {"numRecommendations": 2}}, None, "UNAUTHENTICATED"),
        ({"o": {"numRecommendations": 2}}, token[:-4] + "abcd", "UNAUTHENTICATED"),
    ]
    for variables, used, code in cases:
        quick, full = await _both_ways(api, query, variables, used)
        assert quick.status_code == full.status_code
        assert quick.json()["errors"][0]["extensions"]["code"] == code
        assert _without_dynamic(quick.json()) == _without_dynamic(full.json())
    assert answered == [False] * len(cases)


async def test_the_rate_limit_refuses_as_on_the_full_path(tmp_path, settings) -> None:
    from tests.graph_api.conftest import running_api

    limited = settings.model_copy(
        update={"rate_limit_tiers": {"basic": {"per_user": 8, "per_tenant": 1000}}}
    )
    async with running_api(f"sqlite+aiosqlite:///{tmp_path}/limited.db", limited) as api:
        domain = f"{uuid.uuid4().hex[:8]}.example"
        token, _ = await api.register(f"admin@{domain}", domain)
        answered = _counting(_fast_path(api))
        query = ELIGIBLE[0]
        replies = [
            await api.post(query, {"o": {"numRecommendations": 2}}, token) for _ in range(10)
        ]
        codes = [r.status_code for r in replies]
        assert 200 in codes and codes[-1] == 429, codes
        assert codes == sorted(codes), codes  # answered until the window is spent, then refused
        assert answered == [True] * 10
        refused = replies[-1]
        assert refused.headers["retry-after"].isdigit()
        body = refused.json()
        assert body["data"] is None
        assert body["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
        router = _router(api)
        fast, router.fast_path = router.fast_path, None
        again = await api.post(query, {"o": {"numRecommendations": 2}}, token)
        router.fast_path = fast
        assert again.status_code == 429
        assert again.headers["retry-after"].isdigit()
        assert _without_dynamic(again.json()) == _without_dynamic(body)


async def test_graphql_response_json_is_spoken_on_the_fast_path(api: Api) -> None:
    token, _ = await _seed(api)
    answered = _counting(_fast_path(api))
    response = await api.client.post(
        "/graphql",
        json={"query": ELIGIBLE[0], "variables": {"o": {"numRecommendations": 2}}},
        headers={"Authorization": f"Bearer {token}", "Accept": GRAPHQL_RESPONSE_JSON},
    )
    assert answered == [True]
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(GRAPHQL_RESPONSE_JSON)
    assert len(response.json()["data"]["recommendations"]["items"]) == 2


async def test_served_lists_are_recorded_as_impressions(api: Api) -> None:
    token, _ = await _seed(api)
    answered = _counting(_fast_path(api))
    ids = set()
    for _ in range(3):
        reply = await api.ok(ELIGIBLE[0], {"o": {"numRecommendations": 2}}, token)
        ids.add(reply["recommendations"]["recommendationId"])
    assert answered == [True] * 3 and len(ids) == 3
    await api.app.state.services.feedback.flush(everything=True)
    async with api.database.session(readonly=True) as session:
        for served in ids:
            found = await session.scalars(
                select(Impression).where(Impression.id == uuid.UUID(served))
            )
            impression = found.one()
            assert len(impression.items) == 2
