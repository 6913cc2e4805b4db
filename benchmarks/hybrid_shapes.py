"""Do the served hybrid's defaults hold on data they were not tuned on?

    python -m benchmarks.hybrid_shapes [--data ../shared/data/ml-100k] [--json shapes.json]

The hybrid's default weights were chosen on validation splits of ML-100K's training part, and
training tunes each tenant's own blend on its holdout (keeping the defaults unless the tenant's
data shows a significant gain). Here the served core (``recommend.step``, in-process engines)
is measured, with the blend training would tune, on tenants of other shapes: generated
catalogues (base, sparser, long-tail, many cold users) and ML-100K subsamples (fewer users,
sparser users). Each is split 75/25 per user (seed 42) at the (user, item) level, so no pair is
both trained on and tested; every engine and the hybrid are asked for every test user's top 10
with the user's history, as the API asks. One row per tenant: the best single engine, the hybrid
and the gap (the target: never below the best engine by more than 0.005).
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.quality import evaluate_served, fit_engines, tenant_blend, tenant_data
from recommend.types import HYBRID
from training.data import ItemInfo
from training.datasets import generate_catalogue, load_movielens
from training.evaluation import stratified_pair_split
from training.hybrid import HybridConfig

Event = tuple[str, str, str, float | None, float]
ENGINES_TO_BEAT = ("ease", "als", "item_knn", "user_knn", "popularity", "content")


def measure(name: str, events: Sequence[Event], items: list[ItemInfo]) -> dict[str, Any]:
    train, test = stratified_pair_split(events, 0.75, seed=42)
    tenant = tenant_data(train, items)
    engines = list(dict.fromkeys([*ENGINES_TO_BEAT, *HybridConfig().engines()]))
    models, _ = fit_engines(tenant.matrix(), items, engines)
    blend = tenant_blend(tenant, engines)
    results = evaluate_served(models, train, test, [*ENGINES_TO_BEAT, HYBRID], blend=blend)
    best = max(ENGINES_TO_BEAT, key=lambda e: results[e]["ndcg@10"])
    users = len({e[0] for e in events})
    return {
        "tenant": name,
        "users": users,
        "items": len({e[1] for e in events}),
        "pairs": len({(e[0], e[1]) for e in events}),
        "best_engine": best,
        "best_ndcg@10": results[best]["ndcg@10"],
        "hybrid_ndcg@10": results[HYBRID]["ndcg@10"],
        "gap": round(results[HYBRID]["ndcg@10"] - results[best]["ndcg@10"], 4),
        "blend": blend,
        "engines": {e: results[e]["ndcg@10"] for e in ENGINES_TO_BEAT},
    }


def synthetic_shapes() -> dict[str, tuple[list[Event], list[ItemInfo]]]:
    shapes = {
        "generated base (600 x 500)": generate_catalogue(600, 500, 8, 20, seed=1),
        "generated sparser (600 x 1500, 6 each)": generate_catalogue(600, 1500, 8, 6, seed=2),
        "generated long tail (800 x 2000, 50% off-taste)": generate_catalogue(
            800, 2000, 10, 12, seed=3, in_cluster_share=0.5
        ),
    }
    out = {name: (list(c.interactions), list(c.items)) for name, c in shapes.items()}
    base = shapes["generated base (600 x 500)"]
    out["generated, 60% cold users (2-4 items)"] = (
        _truncate_users(list(base.interactions), share=0.6, keep=(2, 4)),
        list(base.items),
    )
    return out


def _truncate_users(events: list[Event], *, share: float, keep: tuple[int, int]) -> list[Event]:
    """``share`` of the users keep only their first 2-4 items (a tenant full of newcomers)."""
    rng = random.Random(7)
    users = sorted({e[0] for e in events})
    cold = set(rng.sample(users, int(len(users) * share)))
    allowed: dict[str, set[str]] = {}
    for event in sorted(events, key=lambda e: e[4]):
        user, item = event[0], event[1]
        if user in cold:
            mine = allowed.setdefault(user, set())
            if item not in mine and len(mine) < rng.randint(*keep):
                mine.add(item)
    return [e for e in events if e[0] not in cold or e[1] in allowed.get(e[0], ())]


def movielens_shapes(path: Path) -> dict[str, tuple[list[Event], list[ItemInfo]]]:
    data = load_movielens(path)
    events = [(str(u), str(i), "rating", float(r), float(t)) for u, i, r, t in data.rows]
    rng = random.Random(11)
    users = sorted({e[0] for e in events})
    third = set(rng.sample(users, len(users) // 3))
    sparse = [e for e in events if e[0] in third or rng.random() < 0.3]
    return {
        "ML-100K, a third of the users": ([e for e in events if e[0] in third], data.items),
        "ML-100K, 30% of most users' ratings": (sparse, data.items),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="ML-100K folder for the subsample rows")
    parser.add_argument("--json", type=Path, help="where to write the results")
    args = parser.parse_args(argv)
    shapes = synthetic_shapes()
    if args.data is not None and (args.data / "u.data").exists():
        shapes.update(movielens_shapes(args.data))
    rows = [measure(name, events, items) for name, (events, items) in shapes.items()]
    header = f"{'tenant':<48}{'users':>7}{'items':>7}{'best engine':>14}{'best':>8}"
    print(header + f"{'hybrid':>8}{'gap':>8}")
    print("-" * (len(header) + 16))
    for row in rows:
        print(
            f"{row['tenant']:<48}{row['users']:>7}{row['items']:>7}{row['best_engine']:>14}"
            f"{row['best_ndcg@10']:>8.4f}{row['hybrid_ndcg@10']:>8.4f}{row['gap']:>+8.4f}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
