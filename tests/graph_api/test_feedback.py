"""The feedback loop through the API: served lists become impressions, interactions are credited
to the list and position they came from, and onlineMetrics reports what the lists led to."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from graph_api.feedback_recorder import FeedbackRecorder, new_recommendation_id
from storage.feedback_rules import FeedbackRules
from storage.models import Attribution, Impression
from storage.repositories import feedback as feedback_repo
from tests.graph_api.conftest import Api, make_settings, running_api

RECOMMEND = """query { recommendations(options: {numRecommendations: 3}) {
  recommendationId items { item { id } } explanation { cached } } }"""
SIMILAR = """query($id: UUID!) { similarItems(itemId: $id, topK: 3) {
  recommendationId item { id } } }"""
TRENDING = "query { trendingItems(limit: 2) { recommendationId item { id } } }"
RECORD = """mutation($input: InteractionInput!) { recordInteraction(input: $input) { id } }"""
METRICS = """query($window: String!, $groups: [MetricGroup!]) {
  onlineMetrics(window: $window, groupBy: $groups) {
    surface strategy day listsServed impressions clicks conversions ctr itemCtr
    conversionRate revenue meanReciprocalRank coverage } }"""
RULES = """mutation($input: FeedbackRulesInput!) { updateFeedbackRules(input: $input) {
  clickTypes conversionTypes attributionWindowMinutes } }"""
CREATE = "mutation($t: String!) { createItem(input: {title: $t}) { id } }"


async def _shop(api: Api, domain: str = "loop.example") -> tuple[str, str, list[str]]:
    """An admin, a shopper and six items."""
    admin, _ = await api.register(f"admin@{domain}", domain)
    items = [
        (await api.ok(CREATE, {"t": f"Film {n}"}, admin))["createItem"]["id"] for n in range(6)
    ]
    shopper, _ = await api.register(f"shopper@{domain}", domain)
    return admin, shopper, items


async def _listed(api: Api, token: str) -> list[str]:
    answer = (await api.ok(RECOMMEND, token=token))["recommendations"]
    return [entry["item"]["id"] for entry in answer["items"]]


def _feedback(api: Api) -> FeedbackRecorder:
    return api.app.state.services.feedback


def _record(item: str, kind: str = "click", **extra: Any) -> dict[str, Any]:
    return {"input": {"itemId": item, "interactionType": kind, **extra}}


def _code(payload: dict) -> str:
    return payload["errors"][0]["extensions"]["code"]


async def _attributions(api: Api) -> list[Attribution]:
    async with api.database.session() as session:
        return list(await session.scalars(select(Attribution)))


async def test_lists_are_impressions_and_interactions_are_credited_to_their_position(
    api: Api,
) -> None:
    admin, shopper, items = await _shop(api)
    first = (await api.ok(RECOMMEND, token=shopper))["recommendations"]
    listed = [entry["item"]["id"] for entry in first["items"]]
    similar = (await api.ok(SIMILAR, {"id": items[5]}, shopper))["similarItems"]
    assert len({entry["recommendationId"] for entry in similar}) == 1
    again = (await api.ok(RECOMMEND, token=shopper))["recommendations"]
    assert again["explanation"]["cached"]  # a cache hit is served, so it is a list of its own
    assert again["recommendationId"] != first["recommendationId"]

    # explicitly the third of the first list, then implicitly (the newest list showing it)
    named = _record(listed[2], recommendationId=first["recommendationId"])
    clicked = (await api.ok(RECORD, named, shopper))["recordInteraction"]["id"]
    implicit = (await api.ok(RECORD, _record(listed[0]), shopper))["recordInteraction"]["id"]
    bought = _record(listed[0], "purchase", interactionValue=9.5)
    purchase = (await api.ok(RECORD, bought, shopper))["recordInteraction"]["id"]
    await api.ok(RECORD, _record(listed[1], "dislike"), shopper)  # neither click nor conversion
    await _feedback(api).flush(everything=True)

    credited = {str(row.interaction_id): row for row in await _attributions(api)}
    assert set(credited) == {clicked, implicit, purchase}
    assert str(credited[clicked].impression_id) == first["recommendationId"]
    assert (credited[clicked].position, credited[clicked].explicit) == (2, True)
    assert str(credited[implicit].impression_id) == again["recommendationId"]  # the newest
    assert (credited[implicit].position, credited[implicit].explicit) == (0, False)
    assert credited[purchase].conversion and credited[purchase].revenue == 9.5

    rows = await api.ok(METRICS, {"window": "1h", "groups": ["SURFACE"]}, admin)
    by_surface = {row["surface"]: row for row in rows["onlineMetrics"]}
    lists = by_surface["recommendations"]
    assert (lists["listsServed"], lists["impressions"]) == (2, 6)
    assert (lists["clicks"], lists["conversions"], lists["revenue"]) == (2, 1, 9.5)
    assert lists["ctr"] == 1.0 and lists["conversionRate"] == 0.5
    assert lists["itemCtr"] == pytest.approx(2 / 6)
    assert lists["meanReciprocalRank"] == pytest.approx((1 / 3 + 1) / 2)
    assert lists["coverage"] == pytest.approx(3 / 6)
    similar = by_surface["similarItems"]
    assert similar["listsServed"] == 1 and similar["clicks"] == 0
    text = (await api.client.get("/metrics")).text
    assert "recommendation_impressions_total" in text and "recommendation_clicks_total" in text


async def test_feedback_rules_decide_what_counts(api: Api) -> None:
    admin, shopper, _ = await _shop(api)
    rules = {"clickTypes": ["click"], "conversionTypes": ["add_to_cart"],
             "attributionWindowMinutes": 5}  # fmt: skip
    set_rules = await api.ok(RULES, {"input": rules}, admin)
    assert set_rules["updateFeedbackRules"]["conversionTypes"] == ["add_to_cart"]
    listed = await _listed(api, shopper)
    await api.ok(RECORD, _record(listed[0], "view"), shopper)  # no longer a click
    cart = (await api.ok(RECORD, _record(listed[1], "add_to_cart"), shopper))["recordInteraction"]
    await _feedback(api).flush(everything=True)
    (only,) = await _attributions(api)
    assert str(only.interaction_id) == cart["id"] and only.conversion and not only.click

    bad = {**rules, "clickTypes": ["click", "teleport"]}
    refused = await api.gql(RULES, {"input": bad}, admin)
    assert _code(refused) == "BAD_USER_INPUT" and "teleport" in refused["errors"][0]["message"]
    window = await api.gql(RULES, {"input": {**rules, "attributionWindowMinutes": 0}}, admin)
    assert _code(window) == "BAD_USER_INPUT"
    kept = await api.ok("{ feedbackRules { clickTypes attributionWindowMinutes } }", token=admin)
    assert kept["feedbackRules"] == {"clickTypes": ["click"], "attributionWindowMinutes": 5}
    assert _code(await api.gql(RULES, {"input": rules}, shopper)) == "FORBIDDEN"


async def test_an_interaction_outside_the_window_is_not_credited(api: Api) -> None:
    _, shopper, _ = await _shop(api)
    listed = await _listed(api, shopper)
    await _feedback(api).flush()
    async with api.database.session() as session:  # the list was shown 31 minutes ago
        impression = (await session.scalars(select(Impression))).one()
        impression.created_at = datetime.now(UTC) - timedelta(minutes=31)
    await api.ok(RECORD, _record(listed[0]), shopper)
    await _feedback(api).flush(everything=True)
    assert await _attributions(api) == []


async def test_bad_recommendation_ids_and_windows_are_refused(api: Api) -> None:
    admin, shopper, items = await _shop(api)
    other, _ = await api.register("other@loop.example", "loop.example")
    answer = (await api.ok(RECOMMEND, token=other))["recommendations"]
    await _feedback(api).flush()
    listed = [entry["item"]["id"] for entry in answer["items"]]
    async with api.database.session() as session:  # an old list of the other user's
        old = new_recommendation_id(time.time() - 60)
        stored = (await session.scalars(select(Impression))).one()
        await feedback_repo.add_impressions(session=session, rows=[{
            "id": old, "tenant_id": stored.tenant_id, "user_id": stored.user_id,
            "surface": "recommendations", "items": listed, "size": len(listed),
            "engines": [], "created_at": datetime.now(UTC) - timedelta(minutes=1),
            "hour": feedback_repo.hour_of(datetime.now(UTC)),
        }])  # fmt: skip
    cases = [
        ("not-an-id", "BAD_USER_INPUT"),
        (str(uuid.uuid4()), "BAD_USER_INPUT"),  # not one this service gave out
        (str(new_recommendation_id(time.time() - 60)), "NOT_FOUND"),  # never served
        (str(old), "NOT_FOUND"),  # served to someone else
    ]
    for given, code in cases:
        payload = await api.gql(RECORD, _record(listed[0], recommendationId=given), shopper)
        assert _code(payload) == code, (given, payload)
    outside = next(item for item in items if item not in listed)
    payload = await api.gql(RECORD, _record(outside, recommendationId=str(old)), other)
    assert _code(payload) == "BAD_USER_INPUT"  # the item was not in that list
    mine = await api.ok("{ me { interactions(limit: 10) { id } } }", token=shopper)
    assert mine["me"]["interactions"] == []  # nothing refused was written

    for window in ("", "24", "0h", "1y", "3651d", "31d"):
        payload = await api.gql(METRICS, {"window": window}, admin)
        assert _code(payload) == "BAD_USER_INPUT", window
    assert _code(await api.gql(METRICS, {"window": "24h"}, shopper)) == "FORBIDDEN"


async def test_two_replicas_credit_every_click_to_the_list_it_came_from(tmp_path: Path) -> None:
    """Lists served by one app instance, clicks recorded through another (their own queues,
    one database): every click is credited to its list and position."""
    url = f"sqlite+aiosqlite:///{tmp_path}/two.db"
    settings = make_settings(tmp_path, attribution_settle_seconds=0.3)
    async with running_api(url, settings) as one, running_api(url, settings) as two:
        _, shopper, _ = await _shop(one)
        expected: dict[str, tuple[str, int]] = {}
        for turn in range(4):
            serving, clicking = (one, two) if turn % 2 == 0 else (two, one)
            answer = (await serving.ok(RECOMMEND, token=shopper))["recommendations"]
            position = turn % len(answer["items"])
            item = answer["items"][position]["item"]["id"]
            named = {"recommendationId": answer["recommendationId"]} if turn < 2 else {}
            done = await clicking.ok(RECORD, _record(item, **named), shopper)
            expected[done["recordInteraction"]["id"]] = (answer["recommendationId"], position)
            await serving.ok(RECORD, _record(item, "dislike"), shopper)  # leaves the history
        # The clicking side resolves after its settle time, once the serving side has stored
        # the list (both write behind, and retry when SQLite is locked by the other).
        credited: dict[str, tuple[str, int]] = {}
        deadline = time.monotonic() + 10
        while credited != expected and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            credited = {
                str(row.interaction_id): (str(row.impression_id), row.position)
                for row in await _attributions(one)
            }
        assert credited == expected


async def test_a_full_queue_drops_and_counts_instead_of_waiting(tmp_path: Path) -> None:
    recorder = FeedbackRecorder(database=None, queue_size=1)
    tenant, user = uuid.uuid4(), uuid.uuid4()
    first = recorder.served(tenant_id=tenant, user_id=user, surface="trendingItems", items=["a"])
    second = recorder.served(tenant_id=tenant, user_id=user, surface="trendingItems", items=["b"])
    assert first != second  # the caller still gets its id
    assert len(recorder._impressions) == 1
    recorder.interacted(
        rules=FeedbackRules(), interaction_id=uuid.uuid4(), tenant_id=tenant, user_id=user,
        item_id=uuid.uuid4(), interaction_type="click", value=1.0, at=datetime.now(UTC),
        recommendation_id=None,
    )  # fmt: skip
    recorder.interacted(
        rules=FeedbackRules(), interaction_id=uuid.uuid4(), tenant_id=tenant, user_id=user,
        item_id=uuid.uuid4(), interaction_type="click", value=1.0, at=datetime.now(UTC),
        recommendation_id=None,
    )  # fmt: skip
    assert len(recorder._outcomes) == 1


async def test_old_impressions_are_pruned_with_their_attributions(api: Api) -> None:
    _, shopper, _ = await _shop(api)
    listed = await _listed(api, shopper)
    await api.ok(RECORD, _record(listed[0]), shopper)
    await _feedback(api).flush(everything=True)
    assert len(await _attributions(api)) == 1
    async with api.database.session() as session:
        assert (
            await feedback_repo.prune_feedback(
                session=session, before=datetime.now(UTC) - timedelta(days=1)
            )
            == 0
        )
        assert (
            await feedback_repo.prune_feedback(
                session=session, before=datetime.now(UTC) + timedelta(seconds=5)
            )
            == 1
        )
    assert await _attributions(api) == []


async def test_stopping_lets_the_flush_under_way_finish(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled inside its transaction, a flush left SQLite's write lock to a connection
    nobody rolled back: the final flush waited out the busy timeout and dropped the batch."""
    _admin, shopper, _ = await _shop(api)
    feedback = _feedback(api)
    writing, release = asyncio.Event(), asyncio.Event()
    original = feedback_repo.add_impressions

    async def slow(**kwargs: Any) -> None:  # the first write waits, inside its transaction
        if not writing.is_set():
            writing.set()
            await release.wait()
        await original(**kwargs)

    monkeypatch.setattr(feedback_repo, "add_impressions", slow)
    await _listed(api, shopper)  # one served list queued; the writer's next flush takes it
    await asyncio.wait_for(writing.wait(), timeout=5)
    stopping = asyncio.create_task(feedback.stop())
    await asyncio.sleep(0.2)
    assert not stopping.done()  # it waits for the flush instead of cancelling it
    release.set()
    await asyncio.wait_for(stopping, timeout=5)
    async with asyncio.timeout(2):  # nobody holds the write lock
        async with api.database.session() as session:
            stored = (await session.scalars(select(Impression))).all()
    assert len(stored) == 1
