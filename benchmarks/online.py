"""The feedback loop replayed: simulated users click what they liked, through the real API.

A tenant is trained on the training part of a split (MovieLens-100K's 75/25 split of
``benchmarks/quality.py``, or a generated catalogue whose users' last fifth of items is held
out), served in-process (``create_app``, uvicorn, GraphQL over HTTP) with each user's own access
token. A simulated user asks ``recommendations`` (10 items, options left to the service) and
looks down the list: the item at position ``i`` (0 = first) is examined with probability
``EXAMINE / (i + 1) ** 0.5`` and clicked if it is one of the user's held-out items, recorded by
``recordInteraction`` with the list's ``recommendationId``. Then:

(a) a FIXED 50/50 experiment, the tuned hybrid against popularity: per-variant CTR (share of
    lists with a click) with its 95% interval from ``experiment(id)``, the verdict, and after how
    many lists the verdict first said p < 0.01; beside it each arm's offline NDCG@10 on the same
    split, asked of the API for every user with that algorithm named;
(b) a BANDIT over the same arms plus a deliberately bad one: the best arm's share of the lists
    over time, and the cumulative regret (clicks lost against always serving the best arm,
    from each arm's CTR in the run) beside a fixed 1/3 split's.

    python -m benchmarks.online [--data ../shared/data/ml-100k] [--generated]
        [--lists 3000] [--bandit-lists 4000] [--clients 8] [--postgres] [--json online.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.api_quality import (
    DEFAULT_DATA,
    in_process_server,
    make_settings,
    serve_args,
    split_movielens,
    tenant_ids,
    train,
    write_training_folder,
)
from cluster import operations as ops
from ingest.writer import ingest_dataset
from training.datasets import generate_catalogue
from training.evaluation import ranking_metrics

K = 10
EXAMINE = 0.9
DOMAIN = "online.bench"
SERVED = """query { recommendations(options: {numRecommendations: 10}) {
  recommendationId variant items { item { id } } } }"""
ASK = """query($a: String!) { recommendations(options: {numRecommendations: 10, algorithm: $a}) {
  items { item { id } } } }"""
RECORD = """mutation($i: UUID!, $r: ID!) {
  recordInteraction(input: {itemId: $i, interactionType: "click", recommendationId: $r}) { id } }"""
CREATE = """mutation($input: ExperimentInput!) { createExperiment(input: $input) { id } }"""
REPORT = """query($id: ID!) { experiment(id: $id) {
  variants { name listsServed clicks metric metricLow metricHigh currentShare }
  verdict { pValue leader winner significant warning } } }"""
STOP = "mutation($id: ID!) { stopExperiment(id: $id) { status } }"


@dataclass
class Tenant:
    tokens: dict[str, str]  # user (external id) -> token
    relevant: dict[str, set[str]]  # user -> our ids of the held-out items
    admin: str


@dataclass
class Replay:
    served: list[tuple[float, str, bool]] = field(default_factory=list)  # (t, variant, clicked)
    errors: int = 0


async def _post(client: httpx.AsyncClient, query: str, variables: dict, token: str) -> dict:
    response = await client.post(
        "/graphql", json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {token}"},
    )  # fmt: skip
    return response.json()


async def _ok(client: httpx.AsyncClient, query: str, variables: dict, token: str) -> dict:
    payload = await _post(client, query, variables, token)
    if payload.get("errors"):
        raise RuntimeError(payload["errors"][0]["message"])
    return payload["data"]


async def movielens_tenant(settings: Any, data: Path, tmp: Path) -> Tenant:
    split = split_movielens(data)
    folder = write_training_folder(data, split.train, tmp / "ml-train")
    tenant_id = await _ingest_ml(settings, folder)
    await train(settings, tenant_id, None)
    ids = await tenant_ids(settings, DOMAIN, split.users)
    ours = {external: internal for internal, external in ids.items.items()}
    relevant = {
        user: {ours[item] for item in items if item in ours}
        for user, items in split.relevant.items()
        if user in ids.tokens
    }
    return Tenant(ids.tokens, relevant, await _admin(settings))


async def _ingest_ml(settings: Any, folder: Path) -> str:
    tenant = await ops.create_tenant(settings, domain=DOMAIN, tier="enterprise")
    await ops.ingest_movielens(settings, source=str(folder), domain=DOMAIN)
    return str(tenant.id)


async def generated_tenant(settings: Any) -> Tenant:
    catalogue = generate_catalogue(500, 400, 8, 25, seed=42)
    by_user: dict[str, list[tuple]] = {}
    for event in catalogue.interactions:
        by_user.setdefault(event[0], []).append(event)
    train_events, held_out = [], {}
    for user, events in by_user.items():
        events.sort(key=lambda event: event[4])
        items = list(dict.fromkeys(event[1] for event in events))
        kept = set(items[: max(1, int(len(items) * 0.8))])
        train_events += [event for event in events if event[1] in kept]
        held_out[user] = set(items) - kept
    database = await ops.open_database(settings)
    try:
        tenant, _ = await ops.ensure_tenant(database, domain=DOMAIN, tier="enterprise")
        await ingest_dataset(database, tenant.id, items=catalogue.items, interactions=train_events)
    finally:
        await database.dispose()
    await train(settings, str(tenant.id), None)
    users = sorted(user for user, items in held_out.items() if items)
    ids = await tenant_ids(settings, DOMAIN, users)
    ours = {external: internal for internal, external in ids.items.items()}
    relevant = {user: {ours[i] for i in held_out[user] if i in ours} for user in ids.tokens}
    return Tenant(ids.tokens, relevant, await _admin(settings))


async def _admin(settings: Any) -> str:
    issued = await ops.issue_token(settings, domain=DOMAIN, email="admin@online.bench", admin=True)
    return issued.access_token


async def offline_ndcg(base: str, tenant: Tenant, arms: list[str]) -> dict[str, float]:
    """Each arm's NDCG@10 on the held-out items, from lists the API gives with it named."""
    found: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        for arm in arms:
            lists: dict[str, list[str]] = {}
            for user, token in tenant.tokens.items():
                answer = await _ok(client, ASK, {"a": arm}, token)
                lists[user] = [e["item"]["id"] for e in answer["recommendations"]["items"]]
            found[arm] = ranking_metrics(lists, tenant.relevant, K)[f"ndcg@{K}"]
    return found


async def replay(
    base: str, tenant: Tenant, lists: int, clients: int, seed: int,
    probe: Any = None,
) -> Replay:  # fmt: skip
    """``lists`` lists asked by random users, ``clients`` at a time; ``probe(done)`` is awaited
    every 250 lists (for the verdict's and the shares' progress)."""
    run, chooser = Replay(), random.Random(seed)
    users = [user for user in tenant.tokens if tenant.relevant.get(user)]
    clicked: dict[str, set[str]] = {user: set() for user in users}
    started, issued = time.monotonic(), 0
    lock = asyncio.Lock()

    async def one(client: httpx.AsyncClient) -> None:
        nonlocal issued
        while True:
            async with lock:
                if issued >= lists:
                    return
                issued += 1
                user = chooser.choice(users)
                rolls = [chooser.random() for _ in range(K)]
                checkpoint = probe is not None and issued % 250 == 0
            token = tenant.tokens[user]
            payload = await _post(client, SERVED, {}, token)
            if payload.get("errors"):
                run.errors += 1
                continue
            answer = payload["data"]["recommendations"]
            hit = False
            for position, entry in enumerate(answer["items"]):
                item = entry["item"]["id"]
                examined = rolls[position] < EXAMINE / (position + 1) ** 0.5
                if examined and item in tenant.relevant[user] and item not in clicked[user]:
                    clicked[user].add(item)
                    variables = {"i": item, "r": answer["recommendationId"]}
                    if (await _post(client, RECORD, variables, token)).get("errors"):
                        run.errors += 1
                    hit = True
            run.served.append((time.monotonic() - started, answer["variant"] or "-", hit))
            if checkpoint:
                await probe(len(run.served))

    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        await asyncio.gather(*(one(client) for _ in range(clients)))
    return run


async def run_experiments(base: str, tenant: Tenant, args: Any, bad_arm: str) -> dict[str, Any]:
    arms = ["hybrid", "popularity"]
    result: dict[str, Any] = {"offline_ndcg": await offline_ndcg(base, tenant, [*arms, bad_arm])}
    async with httpx.AsyncClient(base_url=base, timeout=60) as admin:
        variants = [{"name": arm, "share": 0.5, "algorithm": arm} for arm in arms]
        created = {"input": {"name": "hybrid vs popularity", "variants": variants}}
        fixed = await _ok(admin, CREATE, created, tenant.admin)
        experiment = fixed["createExperiment"]["id"]
        first_significant: list[int] = []

        async def watch(done: int) -> None:
            await asyncio.sleep(1.2)  # attribution settles
            verdict = await _ok(admin, REPORT, {"id": experiment}, tenant.admin)
            p = verdict["experiment"]["verdict"]["pValue"]
            if p is not None and p < 0.01 and not first_significant:
                first_significant.append(done)

        run = await replay(base, tenant, args.lists, args.clients, seed=1, probe=watch)
        await asyncio.sleep(1.5)
        report = (await _ok(admin, REPORT, {"id": experiment}, tenant.admin))["experiment"]
        await _ok(admin, STOP, {"id": experiment}, tenant.admin)
        result["fixed"] = {"report": report, "errors": run.errors,
                           "first_p_below_0.01_at": first_significant[0] if first_significant
                           else None, "lists": len(run.served)}  # fmt: skip

        arms3 = [*arms, bad_arm]
        variants = [{"name": arm, "share": round(1 / 3, 6) if arm != bad_arm else
                     1 - 2 * round(1 / 3, 6), "algorithm": arm} for arm in arms3]  # fmt: skip
        created = {"input": {"name": "bandit", "variants": variants, "allocation": "BANDIT"}}
        bandit = await _ok(admin, CREATE, created, tenant.admin)
        experiment = bandit["createExperiment"]["id"]
        run = await replay(base, tenant, args.bandit_lists, args.clients, seed=2)
        await asyncio.sleep(1.5)
        report = (await _ok(admin, REPORT, {"id": experiment}, tenant.admin))["experiment"]
        await _ok(admin, STOP, {"id": experiment}, tenant.admin)
    result["bandit"] = {"report": report, "errors": run.errors, **_regret(run, arms3)}
    return result


def _regret(run: Replay, arms: list[str]) -> dict[str, Any]:
    served = [(variant, hit) for _, variant, hit in run.served if variant in arms]
    ctr = {}
    for arm in arms:
        hits = [hit for variant, hit in served if variant == arm]
        ctr[arm] = float(np.mean(hits)) if hits else 0.0
    best = max(arms, key=lambda arm: ctr[arm])
    regret = sum(ctr[best] - ctr[variant] for variant, _ in served)
    uniform = len(served) * (ctr[best] - float(np.mean([ctr[arm] for arm in arms])))
    windows = [
        sum(1 for variant, _ in chunk if variant == best) / len(chunk)
        for chunk in (served[len(served) * n // 8 : len(served) * (n + 1) // 8] for n in range(8))
        if chunk
    ]
    return {"ctr_in_run": ctr, "best": best, "regret": regret, "regret_fixed_third": uniform,
            "best_share_over_time": windows}  # fmt: skip


def print_report(name: str, result: dict[str, Any]) -> None:
    fixed, bandit = result["fixed"], result["bandit"]
    print(f"\n== {name}: fixed 50/50, {fixed['lists']} lists, {fixed['errors']} errors ==")
    print(f"{'variant':<12}{'lists':>7}{'clicks':>8}{'CTR':>8}{'95% interval':>18}"
          f"{'offline NDCG@10':>17}")  # fmt: skip
    for v in fixed["report"]["variants"]:
        interval = f"{v['metricLow']:.3f}-{v['metricHigh']:.3f}"
        print(f"{v['name']:<12}{v['listsServed']:>7}{v['clicks']:>8}{v['metric']:>8.3f}"
              f"{interval:>18}{result['offline_ndcg'][v['name']]:>17.4f}")  # fmt: skip
    verdict = fixed["report"]["verdict"]
    print(f"verdict: leader {verdict['leader']}, winner {verdict['winner']}, p = "
          f"{verdict['pValue']:.2e}; p < 0.01 first after {fixed['first_p_below_0.01_at']} "
          f"lists (checked every 250)")  # fmt: skip
    print(f"\n== {name}: bandit, {sum(v['listsServed'] for v in bandit['report']['variants'])}"
          f" lists, {bandit['errors']} errors ==")  # fmt: skip
    print(f"{'arm':<12}{'lists':>7}{'CTR':>8}{'share now':>11}{'offline NDCG@10':>17}")
    for v in bandit["report"]["variants"]:
        print(f"{v['name']:<12}{v['listsServed']:>7}{v['metric']:>8.3f}"
              f"{v['currentShare']:>11.3f}{result['offline_ndcg'][v['name']]:>17.4f}")  # fmt: skip
    over_time = " ".join(f"{share:.2f}" for share in bandit["best_share_over_time"])
    print(f"best arm ({bandit['best']}) share of lists, eighths of the run: {over_time}")
    print(f"cumulative regret (clicks): bandit {bandit['regret']:.1f}, fixed 1/3 split "
          f"{bandit['regret_fixed_third']:.1f}")  # fmt: skip


async def measure(name: str, args: Any) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="recserve-online-"))
    try:
        postgres = None
        if args.postgres:  # the tenant's database on a PostgreSQL of the benchmark's own
            from benchmarks.faults import OwnPostgres

            postgres = OwnPostgres().init()
            postgres.start()
        settings = make_settings(tmp / "data", postgres.url if postgres else None)
        if name == "movielens-100k":
            tenant = await movielens_tenant(settings, args.data, tmp)
        else:
            tenant = await generated_tenant(settings)
        with in_process_server(settings, serve_args()) as base:
            return await run_experiments(base, tenant, args, bad_arm="svd")
    finally:
        if postgres is not None:
            postgres.remove()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--lists", type=int, default=3000)
    parser.add_argument("--bandit-lists", type=int, default=4000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--tenants", default="movielens-100k,generated")
    parser.add_argument(
        "--postgres", action="store_true", help="a PostgreSQL of its own instead of SQLite"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results = {}
    for name in args.tenants.split(","):
        if name == "movielens-100k" and not (args.data / "u.data").exists():
            print(f"skipping {name}: no {args.data / 'u.data'}")
            continue
        results[name] = asyncio.run(measure(name, args))
        print_report(name, results[name])
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
