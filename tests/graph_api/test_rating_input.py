"""rateItem takes a RatingInput; the old (itemId, rating) arguments still work, deprecated."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.graph_api.conftest import Api

RATE_INPUT = """
mutation($input: RatingInput!) { rateItem(input: $input) { itemId rating createdAt } }"""
RATE_LEGACY = "mutation($i: UUID!, $r: Float!) { rateItem(itemId: $i, rating: $r) { rating } }"
RATINGS = "{ me { ratings { itemId rating createdAt } } }"
DEPRECATED_ARGS = """
{ __type(name: "Mutation") { fields { name
  args(includeDeprecated: true) { name isDeprecated deprecationReason } } } }"""


@pytest.fixture
async def shop(api: Api) -> dict[str, str]:
    token, _ = await api.register("rater@r.example", "r.example")
    created = await api.ok('mutation { createItem(input: {title: "Lamp"}) { id } }', token=token)
    return {"token": token, "item": created["createItem"]["id"]}


def _code(payload: dict[str, Any]) -> str:
    return payload["errors"][0]["extensions"]["code"]


async def test_rating_input_stores_the_rating(api: Api, shop: dict[str, str]) -> None:
    rated = await api.ok(
        RATE_INPUT, {"input": {"itemId": shop["item"], "rating": 4.5}}, shop["token"]
    )
    assert rated["rateItem"]["rating"] == 4.5
    stored = (await api.ok(RATINGS, token=shop["token"]))["me"]["ratings"]
    assert [(r["itemId"], r["rating"]) for r in stored] == [(shop["item"], 4.5)]


async def test_rated_at_is_kept_and_the_future_is_refused(api: Api, shop: dict[str, str]) -> None:
    earlier = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    entry = {"itemId": shop["item"], "rating": 3.0, "ratedAt": earlier.isoformat()}
    rated = await api.ok(RATE_INPUT, {"input": entry}, shop["token"])
    assert datetime.fromisoformat(rated["rateItem"]["createdAt"]) == earlier

    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    refused = await api.gql(
        RATE_INPUT, {"input": {**entry, "rating": 1.0, "ratedAt": later}}, shop["token"]
    )
    assert _code(refused) == "BAD_USER_INPUT"
    stored = (await api.ok(RATINGS, token=shop["token"]))["me"]["ratings"]
    assert [r["rating"] for r in stored] == [3.0]


async def test_the_deprecated_arguments_still_rate(api: Api, shop: dict[str, str]) -> None:
    await api.ok(RATE_LEGACY, {"i": shop["item"], "r": 2.5}, shop["token"])
    stored = (await api.ok(RATINGS, token=shop["token"]))["me"]["ratings"]
    assert [r["rating"] for r in stored] == [2.5]

    fields = (await api.ok(DEPRECATED_ARGS))["__type"]["fields"]
    args = {a["name"]: a for f in fields if f["name"] == "rateItem" for a in f["args"]}
    assert not args["input"]["isDeprecated"]
    assert args["itemId"]["isDeprecated"] and args["rating"]["isDeprecated"]
    assert "input" in args["itemId"]["deprecationReason"]


@pytest.mark.parametrize(
    "query",
    [
        "mutation { rateItem { rating } }",  # neither form
        'mutation { rateItem(itemId: "ITEM") { rating } }',  # half of the old form
        "mutation { rateItem(rating: 4) { rating } }",
        'mutation { rateItem(input: {itemId: "ITEM", rating: 4}, itemId: "ITEM", rating: 4)'
        " { rating } }",  # both forms
        'mutation { rateItem(input: {itemId: "ITEM", rating: 4}, rating: 4) { rating } }',
    ],
)
async def test_exactly_one_form_is_required(api: Api, shop: dict[str, str], query: str) -> None:
    payload = await api.gql(query.replace("ITEM", shop["item"]), token=shop["token"])
    assert _code(payload) == "BAD_USER_INPUT", payload
    assert (await api.ok(RATINGS, token=shop["token"]))["me"]["ratings"] == []


ITEM_AVERAGE = "query($id: UUID!) { item(id: $id) { averageRating } }"


async def test_a_tenant_on_its_own_scale_rates_and_reads_on_it(api: Api) -> None:
    """A tenant rating 0 to 10: rateItem takes 7.5 (stored as 3.875 of 0.5-5), shows 7.5 back
    (the rating and the item's average), and refuses 11 naming the scale."""
    from storage import repositories as repo
    from storage.rating_scale import RatingScale

    token, _ = await api.register("ten@ten.example", "ten.example")
    created = await api.ok('mutation { createItem(input: {title: "Lamp"}) { id } }', token=token)
    item = created["createItem"]["id"]
    async with api.database.session() as session:
        tenant = await repo.get_tenant_by_domain(session=session, domain="ten.example")
        await repo.set_tenant_rating_scale(
            session=session, tenant_id=tenant.id, scale=RatingScale.parse("0:10")
        )
    rated = await api.ok(RATE_INPUT, {"input": {"itemId": item, "rating": 7.5}}, token)
    assert rated["rateItem"]["rating"] == pytest.approx(7.5)
    stored = (await api.ok(RATINGS, token=token))["me"]["ratings"]
    assert [r["rating"] for r in stored] == [pytest.approx(7.5)]
    average = await api.ok(ITEM_AVERAGE, {"id": item}, token)
    assert average["item"]["averageRating"] == pytest.approx(7.5)
    async with api.database.session() as session:
        [row] = await repo.load_ratings(session=session, tenant_id=tenant.id)
    assert row[2] == pytest.approx(3.875)  # the stored range
    refused = await api.gql(RATE_INPUT, {"input": {"itemId": item, "rating": 11}}, token)
    assert _code(refused) == "BAD_USER_INPUT"
    assert "outside the tenant's rating scale 0:10" in refused["errors"][0]["message"]
