"""Experiments through the API: deterministic assignment, per-variant reports with intervals and
a verdict, stop and promote, bandit shares, and refused input that leaves nothing behind."""

from __future__ import annotations

import uuid
from typing import Any

from graph_api.experiment_stats import (
    MIN_EXPLORATION,
    bucket,
    estimate,
    p_value,
    pick,
    thompson_shares,
    verdict,
)
from storage.repositories.feedback import VariantOutcome
from tests.graph_api.conftest import Api
from tests.graph_api.test_feedback import RECORD, _feedback, _record, _shop

CREATE = """mutation($input: ExperimentInput!) { createExperiment(input: $input) {
  id status allocation primaryMetric variants { name share currentShare options } } }"""
REPORT = """query($id: ID!) { experiment(id: $id) { status promoted
  variants { name users listsServed clicks metric metricLow metricHigh currentShare }
  verdict { pValue leader winner significant warning } } }"""
LIST = "{ experiments { id name status } }"
STOP = "mutation($id: ID!) { stopExperiment(id: $id) { status } }"
PROMOTE = """mutation($id: ID!, $v: String!) { promoteVariant(experimentId: $id, variant: $v) {
  status promoted } }"""
SERVED = """query($k: Int!) { recommendations(options: {numRecommendations: $k}) {
  recommendationId variant algorithm items { item { id } } } }"""
ASKED = """query { recommendations(options: {algorithm: "item_knn", numRecommendations: 2}) {
  variant algorithm } }"""


def _experiment(**changes: Any) -> dict[str, Any]:
    base = {
        "name": "popularity vs kNN",
        "variants": [
            {"name": "pop", "share": 0.5, "algorithm": "popularity"},
            {"name": "knn", "share": 0.5, "algorithm": "item_knn", "diversify": False},
        ],
    }
    return {"input": {**base, **changes}}


def _code(payload: dict) -> str:
    return payload["errors"][0]["extensions"]["code"]


async def test_users_get_their_variant_and_the_report_counts_what_it_led_to(api: Api) -> None:
    admin, _, _ = await _shop(api, "ab.example")
    made = (await api.ok(CREATE, _experiment(), admin))["createExperiment"]
    assert made["status"] == "running" and made["allocation"] == "FIXED"
    assert made["variants"][1]["options"] == {"algorithm": "item_knn", "diversify": False}
    experiment = made["id"]
    shoppers = [(await api.register(f"u{n}@ab.example", "ab.example")) for n in range(8)]
    seen: dict[str, str] = {}
    for token, user in shoppers:
        answer = (await api.ok(SERVED, {"k": 2}, token))["recommendations"]
        expected = pick(["pop", "knn"], [0.5, 0.5], bucket(uuid.UUID(experiment), uuid.UUID(user)))
        assert answer["variant"] == expected  # the hash decides, on any replica
        assert answer["algorithm"] == {"pop": "popularity", "knn": "item_knn"}[expected]
        again = (await api.ok(SERVED, {"k": 3}, token))["recommendations"]
        assert again["variant"] == expected  # stable for the user
        seen[user] = expected
        if expected == "knn":  # kNN users click their first item
            item = answer["items"][0]["item"]["id"]
            named = _record(item, recommendationId=answer["recommendationId"])
            await api.ok(RECORD, named, token)
    asked = (await api.ok(ASKED, token=shoppers[0][0]))["recommendations"]
    assert asked["variant"] is None and asked["algorithm"] == "item_knn"  # served as asked
    await _feedback(api).flush(everything=True)

    reported = (await api.ok(REPORT, {"id": experiment}, admin))["experiment"]
    variants = {variant["name"]: variant for variant in reported["variants"]}
    for name in ("pop", "knn"):
        users = sum(1 for chosen in seen.values() if chosen == name)
        assert variants[name]["users"] == users
        assert variants[name]["listsServed"] == 2 * users
    assert variants["knn"]["clicks"] == sum(1 for v in seen.values() if v == "knn")
    knn = variants["knn"]
    if knn["listsServed"]:
        assert knn["metric"] == 0.5  # one of each user's two lists was clicked
        assert knn["metricLow"] < 0.5 < knn["metricHigh"]
    assert "too little data" in reported["verdict"]["warning"]
    assert reported["verdict"]["winner"] is None and not reported["verdict"]["significant"]

    stopped = await api.ok(STOP, {"id": experiment}, admin)
    assert stopped["stopExperiment"]["status"] == "stopped"
    token = shoppers[0][0]
    assert (await api.ok(SERVED, {"k": 2}, token))["recommendations"]["variant"] is None
    promoted = await api.ok(PROMOTE, {"id": experiment, "v": "knn"}, admin)
    assert promoted["promoteVariant"] == {"status": "promoted", "promoted": "knn"}
    served = (await api.ok(SERVED, {"k": 2}, token))["recommendations"]
    assert served["algorithm"] == "item_knn"  # the tenant's default now


async def test_bad_experiments_are_refused_and_nothing_is_created(api: Api) -> None:
    admin, shopper, _ = await _shop(api, "bad-ab.example")
    two = _experiment()["input"]["variants"]
    cases = [
        ({"variants": [{**two[0], "share": 0.6}, two[1]]}, "sum to 1"),
        ({"variants": [two[0]]}, "2 to 10 variants"),
        ({"variants": [two[0], {**two[1], "name": "pop"}]}, "distinct"),
        ({"variants": [two[0], {**two[1], "algorithm": "astrology"}]}, "astrology"),
        ({"variants": [two[0], {**two[1], "weights": {"nope": 1}}]}, "nope"),
        ({"variants": [{**two[0], "share": 0}, {**two[1], "share": 1}]}, "above 0"),
        ({"name": "  "}, "name"),
    ]
    for change, message in cases:
        payload = await api.gql(CREATE, _experiment(**change), admin)
        assert _code(payload) == "BAD_USER_INPUT", change
        assert message in payload["errors"][0]["message"], payload
    assert (await api.ok(LIST, token=admin))["experiments"] == []  # nothing half-created

    rules = {"clickTypes": ["click"], "conversionTypes": [], "attributionWindowMinutes": 30}
    await api.ok(
        "mutation($i: FeedbackRulesInput!) { updateFeedbackRules(input: $i) { clickTypes } }",
        {"i": rules},
        admin,
    )
    no_conversions = await api.gql(CREATE, _experiment(primaryMetric="CONVERSION"), admin)
    assert _code(no_conversions) == "BAD_USER_INPUT"
    assert "conversionTypes" in no_conversions["errors"][0]["message"]

    first = (await api.ok(CREATE, _experiment(), admin))["createExperiment"]["id"]
    overlapping = await api.gql(CREATE, _experiment(name="another"), admin)
    assert _code(overlapping) == "BAD_USER_INPUT"
    assert overlapping["errors"][0]["extensions"]["reason"] == "OVERLAPPING_EXPERIMENT"
    unknown = await api.gql(PROMOTE, {"id": first, "v": "ghost"}, admin)
    assert _code(unknown) == "BAD_USER_INPUT" and "pop, knn" in unknown["errors"][0]["message"]
    assert _code(await api.gql(REPORT, {"id": str(uuid.uuid4())}, admin)) == "NOT_FOUND"
    assert _code(await api.gql(REPORT, {"id": "nope"}, admin)) == "BAD_USER_INPUT"
    assert _code(await api.gql(CREATE, _experiment(name="mine"), shopper)) == "FORBIDDEN"
    listed = (await api.ok(LIST, token=admin))["experiments"]
    assert [(e["id"], e["status"]) for e in listed] == [(first, "running")]


async def test_a_bandit_starts_even_and_reports_its_shares(api: Api) -> None:
    admin, _, _ = await _shop(api, "bandit.example")
    made = await api.ok(CREATE, _experiment(allocation="BANDIT"), admin)
    shares = [v["currentShare"] for v in made["createExperiment"]["variants"]]
    assert abs(shares[0] - shares[1]) < 0.1 and abs(sum(shares) - 1) < 1e-9


def _outcome(name: str, lists: int, clicked: int, revenue: float = 0.0) -> VariantOutcome:
    return VariantOutcome(name, lists, lists, lists * 10, clicked, clicked, 0, 0, revenue,
                          revenue * revenue / max(lists, 1))  # fmt: skip


def test_thompson_sampling_moves_traffic_to_the_better_arm_but_keeps_exploring() -> None:
    experiment = uuid.uuid4()
    names = ["good", "fair", "bad"]
    outcomes = {"good": _outcome("good", 400, 120), "fair": _outcome("fair", 400, 80),
                "bad": _outcome("bad", 400, 8)}  # fmt: skip
    shares = thompson_shares(experiment, names, outcomes, "ctr")
    assert shares[0] > 0.85 and min(shares) >= MIN_EXPLORATION - 1e-12
    assert abs(sum(shares) - 1) < 1e-9
    assert shares == thompson_shares(experiment, names, outcomes, "ctr")  # every replica agrees
    even = thompson_shares(experiment, names, {}, "ctr")
    assert max(even) - min(even) < 0.1


def test_verdict_declares_a_winner_only_when_significant_on_enough_data() -> None:
    names = ["a", "b"]
    clear = {"a": _outcome("a", 1000, 300), "b": _outcome("b", 1000, 200)}
    decided = verdict(names, clear, "ctr")
    assert decided.winner == "a" and decided.p_value is not None and decided.p_value < 0.001
    close = {"a": _outcome("a", 1000, 205), "b": _outcome("b", 1000, 200)}
    assert verdict(names, close, "ctr").winner is None
    small = {"a": _outcome("a", 20, 10), "b": _outcome("b", 20, 1)}
    few = verdict(names, small, "ctr")
    assert few.winner is None and few.warning is not None and few.leader == "a"
    p = p_value(clear["a"], clear["b"], "ctr")
    assert p is not None and abs(p - decided.p_value) < 1e-12
    interval = estimate(clear["a"], "ctr")
    assert interval.low < 0.3 < interval.high and interval.high - interval.low < 0.06
